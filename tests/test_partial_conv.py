import pytest
import torch

from toconv.geometry import PRESET_GEOMETRIES, resolve_geometry
from toconv.layers import PartialConv2d


def reference_partial_conv(x, weight, bias, k, s, p):
    """Explicit float64 loops: sum over valid window entries, scaled by k² / #valid."""
    b, cin, n, _ = x.shape
    cout = weight.shape[0]
    out_n = (n + 2 * p - k) // s + 1
    y = torch.zeros(b, cout, out_n, out_n, dtype=torch.float64)
    for i in range(out_n):
        for j in range(out_n):
            acc = torch.zeros(b, cout, dtype=torch.float64)
            valid = 0
            for dy in range(k):
                for dx in range(k):
                    r, c = i * s - p + dy, j * s - p + dx
                    if 0 <= r < n and 0 <= c < n:
                        acc += x[:, :, r, c] @ weight[:, :, dy, dx].T
                        valid += 1
            y[:, :, i, j] = acc * (k * k / valid) + bias
    return y


@pytest.mark.parametrize("pair", list(PRESET_GEOMETRIES) + [(20, 7)])
def test_partial_conv_matches_float64_reference(pair, device):
    g = resolve_geometry(*pair)
    torch.manual_seed(0)
    conv = PartialConv2d(3, 4, g).double()
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, g.input_grid_size, g.input_grid_size, dtype=torch.float64)
    ref = reference_partial_conv(x, conv.weight.detach(), conv.bias.detach(), g.kernel_size,
                                 g.stride, g.padding)
    y = conv.to(device)(x.to(device))
    torch.testing.assert_close(y.cpu(), ref, rtol=1e-10, atol=1e-10)


def test_border_windows_are_not_shrunk():
    g = resolve_geometry(24, 12)  # padding 1: corner window holds 4 of 9 inputs
    conv = PartialConv2d(2, 2, g)
    conv.init_average_pooling()
    y = conv(torch.ones(1, 2, 24, 24))
    torch.testing.assert_close(y, torch.ones_like(y))


def test_scale_is_a_non_persistent_buffer():
    conv = PartialConv2d(2, 2, resolve_geometry(24, 12))
    assert "scale" in dict(conv.named_buffers())
    assert "scale" not in conv.state_dict()


def test_unscaled_directions_keep_their_part_of_clipped_windows_unrenormalised(device):
    g = resolve_geometry(24, 12)  # 23 windows clipped at the top and left border
    torch.manual_seed(0)
    conv = PartialConv2d(4, 4, g, bias=False).double()
    x = torch.randn(2, 4, 24, 24, dtype=torch.float64)
    u = torch.linalg.qr(torch.randn(4, 2, dtype=torch.float64)).Q
    conv.set_unscaled_directions(u)
    assert set(conv.state_dict()) == {"weight", "unscaled_directions"}
    renormalised = reference_partial_conv(x, conv.weight.detach(), 0.0, 3, 2, 1)
    plain = torch.nn.functional.conv2d(x, conv.weight.detach(), stride=2, padding=1)
    held, rest = u @ u.T, torch.eye(4, dtype=torch.float64) - u @ u.T
    expected = torch.einsum("cd,bdij->bcij", held, plain) + torch.einsum("cd,bdij->bcij", rest, renormalised)
    torch.testing.assert_close(conv.to(device)(x.to(device)).cpu(), expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(plain[:, :, 0], renormalised[:, :, 0])
    with pytest.raises(ValueError, match=r"expected unscaled directions of shape \(4, p\), got \(3, 2\)"):
        conv.set_unscaled_directions(torch.zeros(3, 2))
