"""The compared methods, one registry: fixed baselines, learned ones, and trained checkpoints.

Every method maps (B, N, C) patch tokens of a square grid to (B, M, C) tokens. A method is
registered with :func:`register_method` as a builder that receives the :class:`MethodContext` of
one output size and one seed and returns a :class:`Method` (or None where it does not apply).
Methods registered ``seeded`` (everything trained or drawn at random) are built once per seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from toconv.bench.config import BenchConfig
from toconv.bench.reducers import (
    antialiased_resize,
    average_pool,
    mode_pool,
    rf_center_indices,
    tome_flops,
    tome_merge,
    train_selection,
    train_unshuffle,
    weighted_window,
)
from toconv.geometry import ConvGeometry, RFGeometry
from toconv.models import TokenCompressor, init_compressor, load_compressor
from toconv.models.pca_init import pinned_token_weights
from toconv.objective import train_on_tokens
from toconv.recipes import Recipe, get_recipe

Reducer = Callable[[Tensor], Tensor]


@dataclass
class Method:
    """One token reducer at one output size.

    Attributes:
        name: short id used in tables and JSON.
        compress: (B, N, C) → (B, M, C).
        params: learned parameters.
        flops: analytic floating-point operations per image (multiply-add = 2).
        train_seconds: wall time of training (0 for fixed methods).
        source: where a learned method comes from (recipe name or checkpoint path).
        assignments: (B, N, C) → (B, N) long, the compressed token that covers each original token
            (ToMe's merge map, a slot's mask); None: the grid cell of a grid method.
        transform: applied to a whole split's (n, M, C) compressed tokens after ``compress`` (the
            rotated control fits its moments to the tokens it is scored on); None: nothing.
    """

    name: str
    compress: Reducer
    params: int = 0
    flops: int = 0
    learned: bool = False
    train_seconds: float = 0.0
    history: dict[str, float] | None = None
    source: str | None = None
    assignments: Reducer | None = None
    transform: Reducer | None = None


@dataclass
class MethodContext:
    """What a method builder gets: the training tokens and the geometry of one output size, and
    the seed of this build (None: the run's ``config.seed``)."""

    train: Tensor
    geometry: ConvGeometry
    config: BenchConfig
    log: Callable[[str], None] = print
    seed: int | None = None
    _trained: dict[str, tuple[TokenCompressor, float, dict[str, float]]] = field(default_factory=dict)
    _starts: dict[tuple[str, int, int], tuple[TokenCompressor, float]] = field(default_factory=dict)

    @property
    def method_seed(self) -> int:
        return self.config.seed if self.seed is None else self.seed

    @property
    def rf(self) -> RFGeometry:
        return RFGeometry.from_conv(self.geometry)

    @property
    def dim(self) -> int:
        return self.train.shape[-1]

    def recipe(self, name: str) -> Recipe:
        """Recipe ``name`` with the run's ``recipe_changes`` applied."""
        return get_recipe(name).changed(**self.config.recipe_changes)

    def start(self, recipe_name: str = "bench") -> tuple[TokenCompressor, float]:
        """The untrained start of recipe ``recipe_name`` at this seed (built once per kind of
        start and shared by every recipe that has it) and the seconds it took."""
        recipe = self.recipe(recipe_name)
        key = (recipe.init, recipe.pca_images, recipe.pin_pooling, recipe.pin_token)
        if key not in self._starts:
            started = time.perf_counter()
            compressor = init_compressor(self.train[: recipe.pca_images], self.geometry.output_grid_size,
                                         recipe.init, self.method_seed, recipe.pin_pooling,
                                         recipe.pin_token)
            self._starts[key] = (compressor.eval(), time.perf_counter() - started)
        return self._starts[key]

    def trained(self, recipe_name: str) -> tuple[TokenCompressor, float, dict[str, float]]:
        """Recipe ``recipe_name``'s start trained with it at this seed (once per context): the
        compressor, the seconds it took and its last losses."""
        if recipe_name not in self._trained:
            started = time.perf_counter()
            compressor, history = train_on_tokens(self.train, self.start(recipe_name)[0],
                                                  self.recipe(recipe_name), self.method_seed)
            self._trained[recipe_name] = (compressor, time.perf_counter() - started, history)
        return self._trained[recipe_name]


Builder = Callable[[MethodContext], Method | None]
_METHODS: dict[str, Builder] = {}
_SEEDED: set[str] = set()


def register_method(name: str, seeded: bool = False) -> Callable[[Builder], Builder]:
    """Decorator: register a builder ``(MethodContext) -> Method | None`` under ``name``;
    ``seeded``: its result depends on the seed (the runner builds it once per seed)."""

    def wrap(builder: Builder) -> Builder:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        _METHODS[name] = builder
        if seeded:
            _SEEDED.add(name)
        return builder

    return wrap


def list_methods() -> list[str]:
    return list(_METHODS)


def is_seeded(name: str) -> bool:
    return name in _SEEDED


def build_method(name: str, ctx: MethodContext) -> Method | None:
    """Registered method ``name`` at ``ctx``'s size and seed (None where it does not apply)."""
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(_METHODS)}")
    return _METHODS[name](ctx)


def build_methods(ctx: MethodContext, names: Sequence[str]) -> list[Method]:
    """The methods ``names`` that apply at ``ctx``'s size, in that order, learned ones trained here."""
    return [m for m in (build_method(name, ctx) for name in names) if m is not None]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def frozen(module: nn.Module) -> Reducer:
    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return module(x)

    return run


def compressor_flops(compressor: TokenCompressor) -> int:
    """Analytic FLOPs per image of a partial-conv compressor (multiply-add = 2)."""
    g, c = compressor.geometry, compressor.config
    return 2 * g.num_outputs * g.kernel_size**2 * c.hidden_dim * c.output_dim


def compressor_method(name: str, compressor: TokenCompressor, **kwargs: object) -> Method:
    return Method(name, frozen(compressor.eval()), n_params(compressor), compressor_flops(compressor),
                  learned=True, **kwargs)


# ----------------------------------------------------------------------------- fixed baselines
@register_method("avg-pool")
def _avg_pool(ctx: MethodContext) -> Method:
    out = ctx.geometry.output_grid_size
    return Method("avg-pool", lambda x: average_pool(x, out), flops=ctx.geometry.num_inputs * ctx.dim)


@register_method("bilinear")
def _bilinear(ctx: MethodContext) -> Method:
    g = ctx.geometry
    taps = 2 * -(-g.input_grid_size // g.output_grid_size)  # triangle filter taps per axis
    return Method("bilinear", lambda x: antialiased_resize(x, g.output_grid_size),
                  flops=4 * taps * g.num_outputs * ctx.dim)


@register_method("tome")
def _tome(ctx: MethodContext) -> Method:
    m = ctx.geometry.num_outputs
    return Method("tome", lambda x: tome_merge(x, m)[0], flops=tome_flops(ctx.geometry.num_inputs, m, ctx.dim),
                  assignments=lambda x: tome_merge(x, m)[1])


@register_method("keep-center")
def _keep_center(ctx: MethodContext) -> Method:
    center = rf_center_indices(ctx.rf)
    return Method("keep-center", lambda x: x[:, center.to(x.device)])


@register_method("blend-pool")
def _blend_pool(ctx: MethodContext) -> Method:
    """What the default start pins, in every direction: half the window's centre token plus half
    the cell mean."""
    weights, rf = pinned_token_weights(ctx.geometry, "blend"), ctx.rf
    return Method("blend-pool", lambda x: weighted_window(x, rf, weights),
                  flops=2 * int((weights > 0).sum()) * ctx.geometry.num_outputs * ctx.dim)


@register_method("mode-pool")
def _mode_pool(ctx: MethodContext) -> Method:
    """Each cell's dominant content (:func:`mode_pool`): a reference for readers scored against
    the cell's majority label, which favour a mode over a mean by design."""
    g, steps = ctx.geometry, 3
    cell = (g.input_grid_size // g.output_grid_size) ** 2
    return Method("mode-pool", lambda x: mode_pool(x, g.output_grid_size, steps=steps),
                  flops=steps * 4 * cell * g.num_outputs * ctx.dim)


# ----------------------------------------------------------------------------- learned
def _start(name: str, recipe_name: str) -> None:
    @register_method(name, seeded=True)
    def build(ctx: MethodContext) -> Method:
        start, seconds = ctx.start(recipe_name)
        ctx.log(f"  {ctx.recipe(recipe_name).init} start of {recipe_name} {ctx.geometry.name} "
                f"seed {ctx.method_seed} in {seconds:.0f} s")
        return compressor_method(name, start, train_seconds=seconds,
                                 source=f"recipe {recipe_name} (untrained)")


_start("toconv-init", "bench")
_start("toconv-pinned-init", "bench-pinned")
_start("toconv-mean-init", "bench-mean")
_start("toconv-center-init", "bench-center")

PIN_SWEEP = (0, 16, 32, 64, 128, 192, 384)
"""Pinned directions of the ``toconv-pin-{p}`` rows (min(p, C) at token width C; 384 = C of
DINOv2-S: average pooling of the cell)."""


def _pin_start(pinned: int) -> None:
    name = f"toconv-pin-{pinned}"

    @register_method(name, seeded=True)
    def build(ctx: MethodContext) -> Method:
        recipe = ctx.recipe("bench")
        started = time.perf_counter()
        start = init_compressor(ctx.train[: recipe.pca_images], ctx.geometry.output_grid_size, recipe.init,
                                ctx.method_seed, pinned)
        seconds = time.perf_counter() - started
        ctx.log(f"  {name} start {ctx.geometry.name} seed {ctx.method_seed} in {seconds:.0f} s")
        return compressor_method(name, start.eval(), train_seconds=seconds,
                                 source=f"recipe bench, pin_pooling={pinned} (untrained)")


for _pinned in PIN_SWEEP:
    _pin_start(_pinned)


def _toconv(name: str, recipe_name: str) -> None:
    @register_method(name, seeded=True)
    def build(ctx: MethodContext) -> Method:
        compressor, seconds, history = ctx.trained(recipe_name)
        ctx.log(f"  trained {name} {ctx.geometry.name} seed {ctx.method_seed} in {seconds:.0f} s: "
                f"{history}")
        return compressor_method(name, compressor, train_seconds=seconds, history=history,
                                 source=f"recipe {recipe_name}")


_toconv("toconv-rf", "bench")
_toconv("toconv-global", "bench-global")
_toconv("toconv-recon", "bench-recon")
_toconv("toconv-rf-pinned", "bench-pinned")
_toconv("toconv-rf-anchored", "bench-anchored")
_toconv("toconv-mean-rf", "bench-mean")
_toconv("toconv-center-rf", "bench-center")
for _critic in ("r1", "critic-steps", "critic-wide", "critic-heavy"):
    _toconv(f"toconv-rf-{_critic}", f"bench-{_critic}")


@register_method("unshuffle-linear", seeded=True)
def _unshuffle(ctx: MethodContext) -> Method | None:
    g = ctx.geometry
    if g.input_grid_size % g.output_grid_size:
        return None
    started = time.perf_counter()
    reducer, history = train_unshuffle(ctx.train, ctx.rf, ctx.recipe("bench"), ctx.config.unshuffle_lr,
                                       ctx.method_seed)
    seconds = time.perf_counter() - started
    ctx.log(f"  trained unshuffle-linear {g.name} in {seconds:.0f} s: {history}")
    f2 = (g.input_grid_size // g.output_grid_size) ** 2
    return Method("unshuffle-linear", frozen(reducer), n_params(reducer), 2 * g.num_outputs * f2 * ctx.dim**2,
                  learned=True, train_seconds=seconds, history=history, source="recipe bench")


def _selection(name: str, critic_weight: float) -> None:
    @register_method(name, seeded=True)
    def build(ctx: MethodContext) -> Method:
        g = ctx.geometry
        started = time.perf_counter()
        selector, history = train_selection(ctx.train, g.output_grid_size, critic_weight, ctx.method_seed)
        seconds = time.perf_counter() - started
        ctx.log(f"  trained {name} {g.name} seed {ctx.method_seed} in {seconds:.0f} s: {history}")
        cell = (g.input_grid_size // g.output_grid_size) ** 2
        width = selector.query.out_features
        return Method(name, frozen(selector), n_params(selector),
                      2 * g.num_outputs * (cell + 1) * ctx.dim * width + 4 * g.num_outputs * cell * ctx.dim,
                      learned=True, train_seconds=seconds, history=history,
                      source=f"train_selection, critic weight {critic_weight}")


# A token chosen by content inside each cell (:class:`~toconv.bench.reducers.CellSelector`, from
# the cell mean), trained by ToConv's two signals (``select-rf``) or by the central one alone.
_selection("select-rf", 0.1)
_selection("select-recon", 0.0)


# ----------------------------------------------------------------------------- negative controls
def moment_preserving_rotation(z: Tensor, generator: torch.Generator) -> Tensor:
    """(S, C) tokens rotated at random in their own whitened space: ``μ + Σ^½ Q Σ^-½ (z − μ)``
    with the mean μ and covariance Σ of ``z`` itself, so the result keeps both exactly and
    scrambles what each direction means. Q is drawn from ``generator`` (Haar)."""
    x = z.double()
    mu, cov = x.mean(0), torch.cov(x.T)
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(values.max() * 1e-9)
    root, inv_root = (vectors * values.sqrt()) @ vectors.T, (vectors / values.sqrt()) @ vectors.T
    q, r = torch.linalg.qr(torch.randn(z.shape[1], z.shape[1], generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    matrix = (root @ q.to(x.device) @ inv_root).T
    return ((x - mu) @ matrix + mu).to(z.dtype)


@register_method("control-rotated", seeded=True)
def _control_rotated(ctx: MethodContext) -> Method:
    compressor, seed = ctx.trained("bench")[0], ctx.method_seed

    def rotate(z: Tensor) -> Tensor:  # the same Q on every split, fitted to that split's moments
        return rearrange(moment_preserving_rotation(rearrange(z, "n m c -> (n m) c"),
                                                    torch.Generator().manual_seed(seed)),
                         "(n m) c -> n m c", n=z.shape[0])

    return Method("control-rotated", frozen(compressor), n_params(compressor), compressor_flops(compressor),
                  source="toconv-rf, rotated in the whitened space of the tokens scored", transform=rotate)


@register_method("control-shuffled", seeded=True)
def _control_shuffled(ctx: MethodContext) -> Method:
    compressor = ctx.trained("bench")[0]
    run, seed = frozen(compressor), ctx.method_seed

    def shuffled(x: Tensor) -> Tensor:
        z = run(x)
        keys = torch.rand(z.shape[:2], generator=torch.Generator().manual_seed(seed))
        order = keys.argsort(dim=1).to(z.device)
        return z.gather(1, repeat(order, "b m -> b m c", c=z.shape[-1]))

    return Method("control-shuffled", shuffled, n_params(compressor), compressor_flops(compressor),
                  source="toconv-rf, positions permuted per image")


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_name(path: Path) -> str:
    """Row name of a checkpoint: ``<run folder>/<file stem>``, e.g. ``quickstart/latest``."""
    path = Path(path)
    return f"{path.parent.name}/{path.stem}" if path.suffix == ".safetensors" else path.name


def load_checkpoint(path: str | Path, input_grid_size: int, hidden_dim: int) -> TokenCompressor:
    """A trained compressor for this benchmark's tokens; ``ValueError`` naming both when its
    input grid or width differs from the data's."""
    compressor = load_compressor(path)
    config = compressor.config
    if (config.input_grid_size, config.hidden_dim) != (input_grid_size, hidden_dim):
        raise ValueError(f"checkpoint {path} reads a {config.input_grid_size}x{config.input_grid_size} "
                         f"grid of width {config.hidden_dim}, but the benchmark's tokens are a "
                         f"{input_grid_size}x{input_grid_size} grid of width {hidden_dim}")
    if config.cls_token or config.output_dim != hidden_dim:
        raise ValueError(f"checkpoint {path}: expected patch tokens in and tokens of width {hidden_dim} "
                         f"out, got cls_token={config.cls_token}, out_dim={config.output_dim}")
    return compressor.eval()


def checkpoint_method(path: str | Path, compressor: TokenCompressor) -> Method:
    return compressor_method(checkpoint_name(Path(path)), compressor, source=str(path))
