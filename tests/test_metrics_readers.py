"""The information probe and its ceiling, the readers and their scoring, on data with known answers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from einops import rearrange

from toconv.metrics import (
    ProbeSettings,
    PseudoLabels,
    TokenReader,
    TrainedReader,
    cell_assignments,
    cell_pca_codes,
    cell_tokens,
    covered_histograms,
    decode_cells,
    fit_slot_maps,
    information_per_image,
    token_positions,
)
from toconv.metrics.information import covering_tokens


def r2(stats: dict[str, torch.Tensor]) -> float:
    return float(1 - stats["sse"].sum() / stats["sst"].sum())


def test_cell_tokens_and_assignments_follow_the_grid() -> None:
    x = torch.arange(16.0).reshape(1, 16, 1)
    assert cell_tokens(x, 2)[0, :, :, 0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13],
                                                      [10, 11, 14, 15]]
    assert cell_assignments(4, 2).tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="divides the input side"):
        cell_tokens(torch.zeros(1, 25, 1), 2)
    assert token_positions(4, 8).tolist() == [[1.5, 1.5], [1.5, 5.5], [5.5, 1.5], [5.5, 5.5]]


def test_information_is_exact_for_cell_affine_codes_and_zero_for_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(60, 16, 5, generator=gen)  # a 4×4 code of an 8×8 grid
    slot = torch.randn(4, 5, 5, generator=gen)  # each cell slot is its own affine map of z
    x = rearrange(torch.einsum("nmc,sdc->nmsd", z, slot) + 2.0, "n (i j) (p q) c -> n (i p j q) c", i=4, p=2)
    grid = cell_assignments(8, 4)

    def info(code: torch.Tensor, a: torch.Tensor = grid) -> float:
        return r2(information_per_image(covering_tokens(code[:40], a), x[:40], covering_tokens(code[40:], a),
                                        x[40:], 4, ridge=1e-9))

    assert info(z) > 0.999
    assert abs(info(torch.randn(60, 16, 5, generator=gen))) < 0.2
    # the covering index decides: a method whose token m covers the originals of cell perm[m]
    perm = torch.randperm(16, generator=gen)
    assert info(z[:, perm.argsort()], perm[grid]) > 0.999
    assert info(z[:, perm.argsort()]) < 0.3
    stats = information_per_image(covering_tokens(z[:40], grid), x[:40], covering_tokens(z[40:], grid), x[40:], 4)
    assert stats["sse"].shape == (20,) and bool((stats["sst"] > 0).all())
    with pytest.raises(ValueError, match="covering tokens shaped like the originals"):
        information_per_image(z[:40], x[:40], z[40:], x[40:], 4)


def test_the_ceiling_is_the_cells_best_linear_code() -> None:
    gen = torch.Generator().manual_seed(1)
    # 2×2 cells of width-3 tokens (12 numbers) in a random 3-dim subspace whose cell mean is 0
    # (plus a little noise): the PCA code keeps it all, pooling nothing
    basis = torch.randn(3, 4, 3, generator=gen)
    basis = rearrange(basis - basis.mean(1, keepdim=True), "k s c -> k (s c)")
    cells = torch.randn(80, 16, 3, generator=gen) @ basis + 0.01 * torch.randn(80, 16, 12, generator=gen)
    x = rearrange(cells, "n (i j) (p q c) -> n (i p j q) c", i=4, p=2, q=2)
    train_code, val_code = cell_pca_codes(x[:60], x[60:], 4, torch.Generator().manual_seed(0))
    grid = cell_assignments(8, 4)
    ceiling = r2(information_per_image(covering_tokens(train_code, grid), x[:60],
                                       covering_tokens(val_code, grid), x[60:], 4))
    pooled = cell_tokens(x, 4).mean(2)
    pooling = r2(information_per_image(covering_tokens(pooled[:60], grid), x[:60],
                                       covering_tokens(pooled[60:], grid), x[60:], 4))
    assert ceiling > 0.99 and pooling < 0.1


def clustered_grids(n: int, gen: torch.Generator, classes: int = 4, dim: int = 8) -> torch.Tensor:
    """(n, 64, dim) 8×8 grids of tokens near one of ``classes`` well separated centres, the class
    constant over 2×2 blocks."""
    centres = 10 * torch.eye(classes, dim)
    labels = torch.randint(classes, (n, 4, 4), generator=gen)
    labels = labels.repeat_interleave(2, 1).repeat_interleave(2, 2).reshape(n, 64)
    return centres[labels] + 0.3 * torch.randn(n, 64, dim, generator=gen)


SMALL = replace(ProbeSettings(), reader_clusters=3, reader_fit_tokens=4000, reader_kmeans_iters=10,
                trained_width=32, trained_heads=2, trained_layers=1, trained_steps=300, trained_batch_size=16,
                trained_queries=32, trained_lr=3e-3)


def test_covered_histograms_count_the_labels_each_token_covers() -> None:
    labels = torch.tensor([[0, 0, 1, 2, 2, 2]])
    assign = torch.tensor([0, 0, 0, 1, 1, 2])
    hist = covered_histograms(labels, assign, 4, 3)
    assert hist[0].tolist() == [[2, 1, 0], [0, 0, 2], [0, 0, 1], [0, 0, 0]]


def mixed_cells(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 16, 1) 4×4 grids whose 2×2 cells each hold three tokens of class A (near 0) and one of
    class B (near 8): the cell mean (near 2) sits in a third class C, so the majority label A is
    read from a kept A token, never from the mean."""
    a = 0.2 * torch.randn(n, 4, 3, 1, generator=gen)
    b = 8.0 + 0.2 * torch.randn(n, 4, 1, 1, generator=gen)
    return rearrange(torch.cat([a, b], dim=2), "n (i j) (p q) c -> n (i p j q) c", i=2, p=2)


@pytest.mark.parametrize("hidden", [None, 32])
def test_frozen_readers_prefer_a_majority_token_to_the_mean_on_mixed_cells(hidden: int | None) -> None:
    gen = torch.Generator().manual_seed(0)
    val = mixed_cells(20, gen)
    c_tokens = 2.0 + 0.2 * torch.randn(20, 16, 1, generator=gen)
    train = torch.cat([mixed_cells(40, gen), c_tokens])  # real tokens of all three classes
    labels = PseudoLabels(train, SMALL, gen)
    reader = TokenReader(train, labels, 300, 3e-2, 512, seed=0, hidden=hidden)
    assert reader.token_accuracy(val) > 0.95
    grid, x_labels = cell_assignments(4, 2), labels(val)
    cells = cell_tokens(val, 2)
    pooled, kept = cells.mean(2), cells[:, :, 0]
    for z, expected in ((pooled, 0.0), (kept, 1.0)):
        scores = reader.score(z, x_labels, grid)
        assert scores["count"].tolist() == [4.0] * 20
        assert float(scores["correct"].sum() / scores["count"].sum()) == pytest.approx(expected, abs=0.05)
    # cross-entropy against the cell's label histogram: the kept token is closer to it
    ce = [float(reader.score(z, x_labels, grid)["cross_entropy"].sum()) for z in (pooled, kept)]
    assert ce[1] < ce[0]


def test_trained_reader_reads_grids_but_not_a_shuffle() -> None:
    gen = torch.Generator().manual_seed(0)
    train_x, val_x = clustered_grids(120, gen, classes=3), clustered_grids(20, gen, classes=3)
    labels = PseudoLabels(train_x, SMALL, gen)
    pooled = [cell_tokens(x, 4).mean(2) for x in (train_x, val_x)]
    train_labels, val_labels = labels(train_x), labels(val_x)

    def accuracy(train_z: torch.Tensor, val_z: torch.Tensor) -> float:
        reader = TrainedReader(train_z, train_labels, labels, SMALL, seed=0)
        scores = reader.score(val_z, val_labels)
        assert reader.curve["final_loss"] < 1.2
        return float(scores["correct"].sum() / scores["count"].sum())

    assert accuracy(*pooled) > 0.9
    shuffled = [z[torch.arange(len(z))[:, None], torch.rand(z.shape[:2], generator=gen).argsort(1)] for z in pooled]
    assert accuracy(*shuffled) < 0.7


def test_slot_maps_rebuild_the_originals_in_their_order() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(60, 16, 5, generator=gen)  # a 4×4 code of an 8×8 grid, each slot an affine map of it
    slot = torch.randn(4, 5, 5, generator=gen)
    x = rearrange(torch.einsum("nmc,sdc->nmsd", z, slot) + 2.0, "n (i j) (p q) c -> n (i p j q) c", i=4, p=2)
    grid = cell_assignments(8, 4)
    maps = fit_slot_maps(covering_tokens(z[:40], grid), x[:40], 4, ridge=1e-9)
    assert maps.shape == (4, 6, 5)
    decoded = decode_cells(covering_tokens(z[40:], grid), maps, 4)
    assert decoded.shape == x[40:].shape and decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, x[40:], atol=1e-3, rtol=1e-3)
    # pooled tokens decode every slot of a cell to the same token
    pooled = cell_tokens(x, 4).mean(2)
    flat = decode_cells(covering_tokens(pooled[40:], grid), fit_slot_maps(covering_tokens(pooled[:40], grid),
                                                                           x[:40], 4), 4)
    assert not torch.allclose(flat, x[40:], atol=0.1)


def per_token_grids(n: int, gen: torch.Generator, classes: int = 3, dim: int = 8) -> torch.Tensor:
    """(n, 64, dim) 8×8 grids whose every token is near one of ``classes`` centres, drawn per token:
    a token's label is read from that token alone."""
    centres = 10 * torch.eye(classes, dim)
    return centres[torch.randint(classes, (n, 64), generator=gen)] + 0.3 * torch.randn(n, 64, dim, generator=gen)


def test_score_tokens_reads_each_token_against_its_own_label() -> None:
    gen = torch.Generator().manual_seed(0)
    train, val = per_token_grids(40, gen), per_token_grids(10, gen)
    labels = PseudoLabels(train, SMALL, gen)
    reader = TokenReader(train, labels, 200, 3e-2, 512, seed=0, hidden=16)
    own = reader.score_tokens(val, labels(val))
    assert own["count"].tolist() == [64.0] * 10
    assert float(own["correct"].sum() / own["count"].sum()) == pytest.approx(reader.token_accuracy(val))
    assert float(own["correct"].sum()) == 640.0
    shifted = reader.score_tokens(val, labels(val).roll(1, dims=1))
    assert float(shifted["correct"].sum()) < 400 and float(shifted["cross_entropy"].sum()) > float(own["cross_entropy"].sum())


@pytest.mark.parametrize("locality", [False, True])
def test_only_a_trained_reader_with_locality_reads_every_token_of_a_full_grid(locality: bool) -> None:
    """Labels drawn per token: the plain reader stays near chance (1/3), locality reads them all."""
    gen = torch.Generator().manual_seed(0)
    train, val = per_token_grids(120, gen), per_token_grids(20, gen)
    labels = PseudoLabels(train, SMALL, gen)
    reader = TrainedReader(train, labels(train), labels, replace(SMALL, trained_locality=locality), seed=0)
    assert (reader.model.log_locality is not None) == locality
    scores = reader.score(val, labels(val))
    accuracy = float(scores["correct"].sum() / scores["count"].sum())
    assert accuracy > 0.9 if locality else accuracy < 0.7
