import pytest
import torch

from toconv import TokenCompressor, resolve_geometry
from toconv.geometry import gather_rf_tokens
from toconv.metrics import RFStats, rf_cosines, rf_statistics
from toconv.objective import (
    GlobalCritic,
    GlobalDecoder,
    RFAttentionDecoder,
    RFConvDecoder,
    RFCritic,
    reconstruction_loss,
)
from toconv.viz import plot_rf_heatmap


@pytest.mark.parametrize("pair", [(24, 12), (24, 6), (16, 8)])
@pytest.mark.parametrize("decoder_cls", [RFConvDecoder, RFAttentionDecoder])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_rf_decoders_shape(pair, decoder_cls, num_layers):
    g = resolve_geometry(*pair)
    kwargs = {"num_heads": 4} if decoder_cls is RFAttentionDecoder else {}
    dec = decoder_cls(16, g, num_layers=num_layers, **kwargs)
    assert dec(torch.randn(2, g.num_outputs, 16)).shape == (2, g.num_outputs, g.kernel_size**2, 16)


def test_conv_decoder_starts_from_broadcast_of_token_and_maps_widths():
    g = resolve_geometry(24, 6)
    dec = RFConvDecoder(16, g, num_layers=2, in_dim=8)
    assert dec(torch.randn(2, 36, 8)).shape == (2, 36, 16, 16)


def test_global_decoder_and_critics_shapes():
    g = resolve_geometry(24, 6)
    assert GlobalDecoder(16, g, num_heads=4)(torch.randn(2, 36, 16)).shape == (2, 576, 16)
    assert RFCritic(16, width=8, depth=2, dropout=0.2)(torch.randn(2, 36, 16)).shape == (2, 36)
    gc = GlobalCritic(16, width=8)
    assert gc(torch.randn(2, 36, 16)).shape == (2,)
    assert gc(torch.randn(2, 576, 16)).shape == (2,)  # any set size


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        RFAttentionDecoder(10, resolve_geometry(24, 6), num_heads=4)


def test_rf_statistics_buckets_and_means():
    per_rf = torch.tensor([0.95, 0.85, 0.7, 0.3])
    s = RFStats.from_rf_cosines(per_rf, 2)
    assert s.buckets == {"excellent": 1, "good": 1, "fair": 1, "poor": 1}
    torch.testing.assert_close(s.row_means, torch.tensor([0.9, 0.5]))
    torch.testing.assert_close(s.col_means, torch.tensor([0.825, 0.575]))
    assert s.to_dict()["cos_map"] == [[pytest.approx(0.95), pytest.approx(0.85)],
                                      [pytest.approx(0.7), pytest.approx(0.3)]]


def test_rf_cosines_only_count_valid_slots():
    rf = TokenCompressor(24, 12, hidden_dim=4).rf
    target = gather_rf_tokens(torch.randn(2, 576, 4), rf)
    pred = target.clone()
    pred[:, ~rf.mask] = torch.randn(4)  # invalid slots disagree; valid ones are exact
    torch.testing.assert_close(rf_cosines(pred, target, rf), torch.ones(2, 144))
    s = rf_statistics(pred, target, rf)
    assert s.buckets["excellent"] == 144 and s.cos_map.shape == (12, 12)


def test_heatmap_png(tmp_path):
    pytest.importorskip("matplotlib")
    s = RFStats.from_rf_cosines(torch.linspace(0.4, 1.0, 36), 6)
    path = plot_rf_heatmap(s, tmp_path / "viz" / "rf_heatmap_epoch_1.png", title="epoch 1")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def smooth_grids(batch: int, n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(B, n², dim) token grids whose channels are low-frequency 2D sinusoids."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.linspace(0, 1, n)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    freq = torch.rand(batch, dim, 2, generator=g) * 2.0
    phase = torch.rand(batch, dim, generator=g) * 6.28
    grid = torch.sin(6.28 * (freq[..., 0, None, None] * yy + freq[..., 1, None, None] * xx)
                     + phase[..., None, None])
    return grid.flatten(2).transpose(1, 2) + 0.5  # offset keeps cosine meaningful


def test_compressor_and_rf_decoder_learn_together():
    torch.manual_seed(0)
    x = smooth_grids(8, 24, 16)
    comp = TokenCompressor(24, 12, hidden_dim=16, init="random")
    dec = RFConvDecoder(16, comp.geometry, num_layers=2, width=32)
    rf = comp.rf
    target = gather_rf_tokens(x, rf)
    opt = torch.optim.Adam([*comp.parameters(), *dec.parameters()], lr=3e-3)
    first = reconstruction_loss(dec(comp(x)), target, rf.mask).cosine.item()
    for _ in range(300):
        loss = reconstruction_loss(dec(comp(x)), target, rf.mask)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    final = reconstruction_loss(dec(comp(x)), target, rf.mask).cosine.item()
    assert final > 0.95, (first, final)
