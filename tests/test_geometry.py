import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toconv.geometry import (
    PRESET_GEOMETRIES,
    ConvGeometry,
    RFGeometry,
    gather_rf_tokens,
    resolve_geometry,
    sample_rf_tokens,
)
from toconv.layers import PartialConv2d

EXPECTED = {
    (24, 12): (3, 2, 1),
    (24, 8): (3, 3, 0),
    (24, 6): (4, 4, 0),
    (24, 4): (6, 6, 0),
    (16, 12): (5, 1, 0),
    (16, 8): (3, 2, 1),
}


@pytest.mark.parametrize("pair", list(EXPECTED))
def test_preset_geometries_are_exact(pair):
    g = resolve_geometry(*pair)
    assert (g.kernel_size, g.stride, g.padding) == EXPECTED[pair]


def brute_force_rfs(g: ConvGeometry) -> list[set[int]]:
    """Which inputs receive gradient from each output of a positive-weight partial conv."""
    conv = PartialConv2d(1, 1, g).double()
    with torch.no_grad():
        conv.weight.fill_(1.0)

    def f(x):
        return conv(x).flatten()

    x = torch.rand(1, 1, g.input_grid_size, g.input_grid_size, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(f, x).reshape(g.num_outputs, g.num_inputs)
    return [set(torch.nonzero(row).flatten().tolist()) for row in jac]


@pytest.mark.parametrize("pair", list(PRESET_GEOMETRIES) + [(20, 7), (24, 5), (9, 9)])
def test_rf_geometry_matches_gradient_brute_force(pair):
    g = resolve_geometry(*pair)
    rf = RFGeometry.from_conv(g)
    expected = brute_force_rfs(g)
    got = [set(rf.indices[m][rf.mask[m]].tolist()) for m in range(rf.num_outputs)]
    assert got == expected
    assert rf.sizes.tolist() == [len(s) for s in expected]
    assert rf.max_size == g.kernel_size**2
    # compact ordering lists exactly the valid indices first
    for m in range(rf.num_outputs):
        n = int(rf.sizes[m])
        assert set(rf.compact[m, :n].tolist()) == expected[m]


def test_border_rfs_are_clipped():
    rf = RFGeometry.from_conv(resolve_geometry(24, 12))
    sizes = rf.sizes.reshape(12, 12)
    assert sizes[0, 0] == 4 and sizes[0, 5] == 6 and sizes[5, 5] == 9
    assert rf.coverage().min() >= 1


@settings(max_examples=60, deadline=None)
@given(n_in=st.integers(1, 40), data=st.data())
def test_derived_geometry_is_valid_for_any_pair(n_in, data):
    n_out = data.draw(st.integers(1, n_in))
    g = resolve_geometry(n_in, n_out)
    assert g.output_grid_size == n_out
    assert RFGeometry.from_conv(g).coverage().min() >= 1


@pytest.mark.parametrize("pair", [(8, 12), (24, 0), (24, -3)])
def test_impossible_pair_lists_valid_choices(pair):
    with pytest.raises(ValueError, match=r"must be an int in \[1, .*presets: 24→12"):
        resolve_geometry(*pair)


def test_invalid_explicit_geometry_says_what_it_produces():
    with pytest.raises(ValueError, match="maps 24x24 to 8x8, not the requested 12x12"):
        ConvGeometry(24, 12, kernel_size=3, stride=3, padding=0)
    with pytest.raises(ValueError, match="outside every receptive field"):
        ConvGeometry(24, 6, kernel_size=2, stride=4, padding=0)


def test_gather_matches_indices_and_zeroes_invalid():
    rf = RFGeometry.from_conv(resolve_geometry(16, 8))
    x = torch.randn(3, 256, 5)
    t = gather_rf_tokens(x, rf)
    assert t.shape == (3, 64, 9, 5)
    m, r = 9, 4  # interior RF, centre slot
    assert torch.equal(t[:, m, r], x[:, rf.indices[m, r]])
    assert (t[:, ~rf.mask] == 0).all()


def test_sample_rf_tokens_draws_only_and_all_valid_members():
    rf = RFGeometry.from_conv(resolve_geometry(24, 12))
    x = torch.arange(576, dtype=torch.float32).reshape(1, 576, 1).expand(400, 576, 2).contiguous()
    gen = torch.Generator().manual_seed(0)
    picked = sample_rf_tokens(x, rf, generator=gen)[..., 0].long()  # (400, M) input indices
    assert picked.shape == (400, 144)
    for m in (0, 5, 77, 143):
        valid = set(rf.indices[m][rf.mask[m]].tolist())
        assert set(picked[:, m].tolist()) == valid  # every member drawn, nothing else
    # independent per image
    assert not torch.equal(picked[0], picked[1])


def test_sample_rf_tokens_is_reproducible_with_generator():
    rf = RFGeometry.from_conv(resolve_geometry(24, 6))
    x = torch.randn(4, 576, 8)
    a = sample_rf_tokens(x, rf, torch.Generator().manual_seed(3))
    b = sample_rf_tokens(x, rf, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
