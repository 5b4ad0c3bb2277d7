"""The fair grid probe, the Fréchet sampling design and the frozen readers, on small synthetic data."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from einops import rearrange

from toconv.geometry import resolve_geometry
from toconv.metrics import (
    PositionReader,
    ProbeSettings,
    PseudoLabels,
    TokenReader,
    cell_tokens,
    information_kept,
    kmeans,
    sample_per_image,
    window_centres,
)


def test_cell_tokens_and_window_centres_follow_the_grid() -> None:
    x = torch.arange(16.0).reshape(1, 16, 1)
    assert cell_tokens(x, 2)[0, :, :, 0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13],
                                                      [10, 11, 14, 15]]
    with pytest.raises(ValueError, match="divides the input side"):
        cell_tokens(torch.zeros(1, 25, 1), 2)
    centres = window_centres(resolve_geometry(24, 12))  # k3 s2 p1: centred on even tokens
    assert centres[:2].tolist() == [[0.0, 0.0], [0.0, 2.0]]


def test_information_kept_is_exact_for_cell_affine_codes_and_zero_for_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(60, 16, 5, generator=gen)  # a 4×4 code of an 8×8 grid
    slot = torch.randn(4, 5, 5, generator=gen)  # each cell slot is its own affine map of z
    cells = torch.einsum("nmc,sdc->nmsd", z, slot) + 2.0
    x = rearrange(cells, "n (i j) (p q) c -> n (i p j q) c", i=4, p=2)
    exact = information_kept(z[:40], x[:40], z[40:], x[40:], ridge=1e-9)
    assert exact["r2"] > 0.999 and exact["centered_cosine"] > 0.999
    noise = torch.randn(60, 16, 5, generator=gen)
    assert abs(information_kept(noise[:40], x[:40], noise[40:], x[40:])["r2"]) < 0.2
    shuffled = z[:, torch.randperm(16, generator=gen)]
    assert information_kept(z[:40], x[:40], shuffled[40:], x[40:])["r2"] < 0.2


def test_sample_per_image_draws_distinct_tokens_of_every_image() -> None:
    gen = torch.Generator().manual_seed(0)
    x = rearrange(torch.arange(3 * 10.0), "(n t) -> n t 1", n=3)
    rows = sample_per_image(x, 4, gen)[:, 0]
    assert rows.shape == (12,)
    for image in range(3):  # 4 distinct tokens of each image
        own = rows[image * 4 : (image + 1) * 4]
        assert len(set(own.tolist())) == 4 and bool(((own >= 10 * image) & (own < 10 * image + 10)).all())


def clustered_grids(n: int, gen: torch.Generator, classes: int = 4, dim: int = 8) -> torch.Tensor:
    """(n, 64, dim) 8×8 grids of tokens near one of ``classes`` well separated centres, the class
    constant over 2×2 blocks."""
    centres = 10 * torch.eye(classes, dim)
    labels = torch.randint(classes, (n, 4, 4), generator=gen)
    labels = labels.repeat_interleave(2, 1).repeat_interleave(2, 2).reshape(n, 64)
    return centres[labels] + 0.3 * torch.randn(n, 64, dim, generator=gen)


SMALL = replace(ProbeSettings(), reader_clusters=4, reader_fit_tokens=4000, reader_kmeans_iters=10,
                reader_steps=150, reader_batch_tokens=256, reader_lr=5e-2, position_width=32,
                position_heads=2, position_layers=1, position_steps=150, position_batch_size=16,
                position_queries=32, position_lr=3e-3)


def test_kmeans_finds_separated_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    x = clustered_grids(20, gen).flatten(0, 1)
    centroids = kmeans(x, 4, 10, gen)
    assert torch.cdist(centroids, 10 * torch.eye(4, 8)).min(0).values.max() < 1.0


def test_token_reader_reads_real_tokens_and_not_rotated_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    train, val = clustered_grids(40, gen), clustered_grids(10, gen)
    labels = PseudoLabels(train, SMALL, gen)
    reader = TokenReader(train, labels, SMALL)
    assert reader.token_accuracy(val) > 0.95
    pooled = rearrange(val, "n (i p j q) c -> n (i j) (p q) c", i=4, p=2, q=2).mean(2)
    good = reader.score(pooled, val)
    assert good["rf_accuracy"] > 0.95 and good["rf_cross_entropy"] < 0.5
    assert good["rf_entropy_floor"] == pytest.approx(0.0)
    rotated = pooled @ torch.linalg.qr(torch.randn(8, 8, generator=gen))[0]
    assert reader.score(rotated, val)["rf_accuracy"] < 0.7


def test_position_reader_needs_the_right_positions() -> None:
    gen = torch.Generator().manual_seed(0)
    train, val = clustered_grids(200, gen), clustered_grids(20, gen)
    labels = PseudoLabels(train, SMALL, gen)
    reader = PositionReader(train, labels, [4], SMALL)
    pooled = rearrange(val, "n (i p j q) c -> n (i j) (p q) c", i=4, p=2, q=2).mean(2)
    centres = window_centres(resolve_geometry(8, 4))
    right = reader.score(pooled, centres, val)["accuracy"]
    wrong = reader.score(pooled[:, torch.randperm(16, generator=gen)], centres, val)["accuracy"]
    assert right > 0.8 and right > wrong + 0.3
    assert reader.curve["final_loss"] < 1.0
