"""Convolution geometry (kernel, stride, padding) that maps an input token grid to an output grid."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ConvGeometry:
    """Square 2D convolution geometry over a token grid.

    ``input_grid_size`` tokens per side go in, ``output_grid_size`` per side come out; windows are
    ``kernel_size`` wide, start every ``stride`` tokens and the grid is zero-padded by ``padding``.
    """

    input_grid_size: int
    output_grid_size: int
    kernel_size: int
    stride: int
    padding: int

    def __post_init__(self) -> None:
        for field, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{field} must be an int, got {type(value).__name__} ({value!r})")
        if min(self.input_grid_size, self.output_grid_size, self.kernel_size, self.stride) < 1:
            raise ValueError(f"sizes, kernel and stride must be >= 1, got {self}")
        if not 0 <= self.padding < self.kernel_size:
            raise ValueError(f"padding must be in [0, kernel_size), got {self}")
        produced = conv_output_size(self.input_grid_size, self.kernel_size, self.stride, self.padding)
        if produced != self.output_grid_size:
            raise ValueError(
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding} maps "
                f"{self.input_grid_size}x{self.input_grid_size} to {produced}x{produced}, "
                f"not the requested {self.output_grid_size}x{self.output_grid_size}"
            )
        if not _covers_grid(self.input_grid_size, self.output_grid_size, self.kernel_size,
                            self.stride, self.padding):
            raise ValueError(f"{self} leaves some input tokens outside every receptive field")

    @property
    def name(self) -> str:
        """Short preset-style name, e.g. ``"24to12"``."""
        return f"{self.input_grid_size}to{self.output_grid_size}"

    @property
    def num_inputs(self) -> int:
        return self.input_grid_size**2

    @property
    def num_outputs(self) -> int:
        return self.output_grid_size**2

    def describe(self) -> str:
        """One line, e.g. ``24×24 → 12×12, PartialConv(k=3, s=2, p=1), RF 3×3``."""
        i, o, k = self.input_grid_size, self.output_grid_size, self.kernel_size
        return (f"{i}×{i} → {o}×{o}, PartialConv(k={k}, s={self.stride}, p={self.padding}), "
                f"RF {k}×{k}")


def conv_output_size(input_size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis."""
    return (input_size + 2 * padding - kernel_size) // stride + 1


def _covers_grid(n_in: int, n_out: int, k: int, s: int, p: int) -> bool:
    """True when every input position lies in at least one window (along one axis)."""
    last_covered = (n_out - 1) * s - p + k - 1
    return s <= k and last_covered >= n_in - 1


PRESET_GEOMETRIES: dict[tuple[int, int], ConvGeometry] = {
    (g.input_grid_size, g.output_grid_size): g
    for g in (
        ConvGeometry(24, 12, kernel_size=3, stride=2, padding=1),
        ConvGeometry(24, 8, kernel_size=3, stride=3, padding=0),
        ConvGeometry(24, 6, kernel_size=4, stride=4, padding=0),
        ConvGeometry(24, 4, kernel_size=6, stride=6, padding=0),
        # 16x16 grids (CLIP-L/224): a stride-1 5x5 window and a half-overlapping 3x3 window.
        ConvGeometry(16, 12, kernel_size=5, stride=1, padding=0),
        ConvGeometry(16, 8, kernel_size=3, stride=2, padding=1),
        # 27x27 grids (SigLIP-so400m/384 with patch 14, LLaVA-OneVision): disjoint 3x3 windows, and
        # half-overlapping 3x3 windows whose zero-padded border windows are renormalised.
        ConvGeometry(27, 9, kernel_size=3, stride=3, padding=0),
        ConvGeometry(27, 14, kernel_size=3, stride=2, padding=1),
    )
}


def _derive(n_in: int, n_out: int) -> ConvGeometry | None:
    """Smallest valid geometry: largest stride first, then smallest kernel, then smallest padding."""
    for stride in range(-(-n_in // n_out), 0, -1):
        for kernel in range(stride, n_in + 1):
            for padding in range(kernel):
                if (conv_output_size(n_in, kernel, stride, padding) == n_out
                        and _covers_grid(n_in, n_out, kernel, stride, padding)):
                    return ConvGeometry(n_in, n_out, kernel, stride, padding)
    return None


def resolve_geometry(input_grid_size: int, output_grid_size: int) -> ConvGeometry:
    """Geometry for ``input_grid_size → output_grid_size``: the preset if one exists, else derived.

    Raises ``ValueError`` listing the valid output sizes when the pair cannot be realised.
    """
    preset = PRESET_GEOMETRIES.get((input_grid_size, output_grid_size))
    if preset is not None:
        return preset
    if input_grid_size >= 1 and 1 <= output_grid_size <= input_grid_size:
        derived = _derive(input_grid_size, output_grid_size)
        if derived is not None:
            return derived
    presets = ", ".join(f"{i}→{o}" for i, o in PRESET_GEOMETRIES)
    raise ValueError(
        f"cannot compress a {input_grid_size}x{input_grid_size} grid to "
        f"{output_grid_size}x{output_grid_size}: output_grid_size must be an int in "
        f"[1, {max(input_grid_size, 1)}]; presets: {presets}"
    )
