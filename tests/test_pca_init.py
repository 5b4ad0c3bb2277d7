"""pca_init_: moment matching, information kept, alignment with pooling, the pooling-pinned
variant, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from toconv.bench.reducers import average_pool
from toconv.geometry import gather_rf_tokens
from toconv.models import TokenCompressor, init_compressor, pca_init_
from toconv.models.pca_init import cell_weights, pinned_token_weights


def smooth_tokens(b: int, grid: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(B, grid², dim) spatially correlated tokens with a non-zero mean and unequal channels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, dim, grid, grid, generator=g)
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="circular"), 3, stride=1)
    x = x * torch.linspace(0.5, 2.0, dim)[:, None, None] + torch.randn(dim, 1, 1, generator=g)
    return rearrange(x, "b c h w -> b (h w) c")


def linear_r2(z: torch.Tensor, target: torch.Tensor) -> float:
    """R² of the best affine map from z (n, C) to target (n, D), fit and scored on the same set."""
    design = torch.cat([z, torch.ones(len(z), 1)], dim=1).double()
    coef = torch.linalg.lstsq(design, target.double()).solution
    residual = target.double() - design @ coef
    return float(1 - residual.pow(2).sum() / (target.double() - target.double().mean(0)).pow(2).sum())


@pytest.fixture(scope="module")
def fitted() -> tuple[TokenCompressor, torch.Tensor]:
    tokens = smooth_tokens(64, 8, 12)
    compressor = TokenCompressor(8, 4, 12)  # k=2, s=2: every RF is full
    return pca_init_(compressor, tokens, generator=torch.Generator().manual_seed(0)), tokens


def test_compressed_tokens_have_the_mean_and_covariance_of_real_ones(fitted) -> None:
    compressor, tokens = fitted
    with torch.no_grad():
        z = rearrange(compressor(tokens), "b m c -> (b m) c")
    x = rearrange(tokens, "b n c -> (b n) c")
    torch.testing.assert_close(z.mean(0), x.mean(0), atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), torch.cov(x.T), atol=2e-3, rtol=1e-3)


def test_keeps_more_than_average_pooling_and_stays_aligned_with_it(fitted) -> None:
    compressor, tokens = fitted
    avg = TokenCompressor(8, 4, 12)
    rf = compressor.rf
    target = rearrange(gather_rf_tokens(tokens, rf), "b m r c -> (b m) (r c)")
    with torch.no_grad():
        z_pca = rearrange(compressor(tokens), "b m c -> (b m) c")
        z_avg = rearrange(avg(tokens), "b m c -> (b m) c")
    assert linear_r2(z_pca, target) > linear_r2(z_avg, target) + 0.02
    centered = F.cosine_similarity(z_pca - z_pca.mean(0), z_avg - z_avg.mean(0), dim=-1)
    assert centered.mean() > 0.6


def test_pinned_start_is_pooling_in_the_top_directions_and_keeps_more_in_the_rest(fitted) -> None:
    _, tokens = fitted
    pinned = pca_init_(TokenCompressor(8, 4, 12), tokens, generator=torch.Generator().manual_seed(0),
                       pin_pooling=4)
    avg = TokenCompressor(8, 4, 12)
    x = rearrange(tokens, "b n c -> (b n) c")
    _, vectors = torch.linalg.eigh(torch.cov(x.T))
    top, rest = vectors[:, -4:], vectors[:, :-4]
    target = rearrange(gather_rf_tokens(tokens, pinned.rf), "b m r c -> (b m) (r c)")
    with torch.no_grad():
        z = rearrange(pinned(tokens), "b m c -> (b m) c")
        z_avg = rearrange(avg(tokens), "b m c -> (b m) c")
    torch.testing.assert_close(z @ top, z_avg @ top, atol=1e-4, rtol=0)  # what pooling says there
    assert not torch.allclose(z @ rest, z_avg @ rest, atol=1e-2)
    torch.testing.assert_close(torch.cov((z @ rest).T), torch.cov((x @ rest).T), atol=5e-3, rtol=1e-2)
    assert linear_r2(z, target) > linear_r2(z_avg, target) + 0.02


def test_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(ValueError, match="out_dim == hidden_dim=12"):
        pca_init_(TokenCompressor(8, 4, 12, out_dim=6, init="random"), smooth_tokens(4, 8, 12))
    with pytest.raises(ValueError, match=r"expected tokens \(B, 64, 12\)"):
        pca_init_(TokenCompressor(8, 4, 12), smooth_tokens(4, 8, 10))
    with pytest.raises(ValueError, match="more than 12 full receptive fields"):
        pca_init_(TokenCompressor(8, 2, 12), smooth_tokens(2, 8, 12))  # 2 × 4 RFs
    with pytest.raises(ValueError, match="pin_pooling: expected 0 to 12 pinned directions, got 13"):
        pca_init_(TokenCompressor(8, 4, 12), smooth_tokens(64, 8, 12), pin_pooling=13)
    with pytest.raises(ValueError, match="grid cells need an output side that divides the input side"):
        pca_init_(TokenCompressor(16, 12, 12), smooth_tokens(8, 16, 12), pin_pooling=4)


@pytest.fixture(scope="module")
def grid_tokens() -> torch.Tensor:
    return smooth_tokens(12, 24, 12, seed=3)


def test_cell_weights_average_the_grid_cell_inside_the_window() -> None:
    from toconv.geometry import resolve_geometry

    at12 = rearrange(cell_weights(resolve_geometry(24, 12)), "(dy dx) -> dy dx", dy=3)
    torch.testing.assert_close(at12, torch.tensor([[0, 0, 0], [0, 0.25, 0.25], [0, 0.25, 0.25]]))
    torch.testing.assert_close(cell_weights(resolve_geometry(24, 8)), torch.full((9,), 1 / 9))
    torch.testing.assert_close(cell_weights(resolve_geometry(24, 6)), torch.full((16,), 1 / 16))


@pytest.mark.parametrize("output", [12, 8, 6])
def test_pinning_every_direction_is_average_pooling_of_the_cell(grid_tokens, output: int) -> None:
    compressor = init_compressor(grid_tokens, output, pin_pooling=100)  # above C=12: all pinned
    assert compressor.pinned_directions.shape == (12, 12)
    with torch.no_grad():
        z = compressor(grid_tokens)
    # every window, the 23 the partial conv clips at 24→12 included: the pinned part is not rescaled
    assert compressor.rf.mask.all(dim=1).all() == (output != 12)
    torch.testing.assert_close(z, average_pool(grid_tokens, output), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("output", [12, 8, 6])
def test_pinning_every_direction_to_the_center_is_keep_center(grid_tokens, output: int) -> None:
    from toconv.bench.reducers import rf_center_indices

    compressor = init_compressor(grid_tokens, output, pin_pooling=12, pin_token="center")
    with torch.no_grad():
        z = compressor(grid_tokens)
    torch.testing.assert_close(z, grid_tokens[:, rf_center_indices(compressor.rf)], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pin_token: expected one of mean, center, blend, got 'corner'"):
        init_compressor(grid_tokens, output, pin_pooling=4, pin_token="corner")
    from toconv.geometry import ConvGeometry

    with pytest.raises(ValueError, match="centre slot inside the grid in every window, got 13 windows"):
        pinned_token_weights(ConvGeometry(24, 7, kernel_size=5, stride=4, padding=3), "center")


@pytest.mark.parametrize("output", [12, 8, 6])
def test_pinning_every_direction_to_the_blend_averages_centre_and_cell_mean(grid_tokens, output: int) -> None:
    from toconv.bench.reducers import rf_center_indices

    compressor = init_compressor(grid_tokens, output, pin_pooling=12, pin_token="blend")
    with torch.no_grad():
        z = compressor(grid_tokens)
    centre = grid_tokens[:, rf_center_indices(compressor.rf)]
    torch.testing.assert_close(z, (centre + average_pool(grid_tokens, output)) / 2, atol=1e-5, rtol=1e-5)
    weights = rearrange(pinned_token_weights(compressor.geometry, "blend"), "(dy dx) -> dy dx",
                        dy=compressor.geometry.kernel_size)
    assert float(weights.sum()) == pytest.approx(1.0)
    if output == 12:  # the centre slot (1, 1) is one of the 2×2 cell's four
        torch.testing.assert_close(weights, torch.tensor([[0, 0, 0], [0, 0.625, 0.125], [0, 0.125, 0.125]]))


@pytest.mark.parametrize("token", ["mean", "center", "blend"])
@pytest.mark.parametrize("output", [8, 6])
def test_pinned_start_codes_the_residual_whitened_so_the_rest_keeps_real_moments(
        grid_tokens, output: int, token: str) -> None:
    """The rest directions carry the whitened PCA code of e(r) coloured by their real variances: on
    the fitting tokens (every window full at 24→8 and 24→6) their covariance is the real tokens'.
    A residual map that is not e(r)'s code (its least-squares part applied in the wrong order)
    missed this by 14–26 % for the centre and blend tokens."""
    compressor = init_compressor(grid_tokens, output, pin_pooling=4, pin_token=token)
    x = rearrange(grid_tokens, "b n c -> (b n) c")
    rest = torch.linalg.eigh(torch.cov(x.T))[1][:, :-4]
    with torch.no_grad():
        z = rearrange(compressor(grid_tokens), "b m c -> (b m) c")
    real, coded = torch.cov((x @ rest).T), torch.cov((z @ rest).T)
    assert float((coded - real).norm() / real.norm()) < 0.005


@pytest.mark.parametrize(("output", "pinned"), [(12, 3), (8, 5), (6, 1), (8, 11)])
def test_pinned_directions_read_the_cell_mean_and_travel_in_checkpoints(
        grid_tokens, tmp_path, output: int, pinned: int) -> None:
    compressor = init_compressor(grid_tokens, output, pin_pooling=pinned)
    basis = compressor.pinned_directions
    x = rearrange(grid_tokens, "b n c -> (b n) c")
    _, vectors = torch.linalg.eigh(torch.cov(x.T))
    torch.testing.assert_close(basis @ basis.T, vectors[:, -pinned:] @ vectors[:, -pinned:].T)
    with torch.no_grad():
        z = compressor(grid_tokens)
    pooled = average_pool(grid_tokens, output)
    torch.testing.assert_close(z @ basis, pooled @ basis, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(z, pooled, atol=1e-2)
    saved = compressor.save_pretrained(tmp_path / "pinned.safetensors")
    loaded = TokenCompressor.from_pretrained(saved)
    assert loaded.config.pinned_dim == pinned
    torch.testing.assert_close(loaded.pinned_directions, basis)
    with torch.no_grad():
        torch.testing.assert_close(loaded(grid_tokens), z)
    assert init_compressor(grid_tokens, output).pinned_directions is None
