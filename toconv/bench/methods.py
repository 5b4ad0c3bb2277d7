"""The compared token reducers: fixed baselines and learned ones, trained on train-split tokens.

Every method maps (B, N, C) patch tokens of a square grid to (B, M, C) tokens.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from toconv.bench.config import Recipe
from toconv.geometry import RFGeometry, gather_rf_tokens
from toconv.losses import reconstruction_loss
from toconv.models import (
    GlobalCritic,
    GlobalDecoder,
    RFConvDecoder,
    RFCritic,
    TokenCompressor,
    pca_init_,
)
from toconv.training import CompressorObjective

Reducer = Callable[[Tensor], Tensor]


@dataclass
class Method:
    """One token reducer at one output size.

    Attributes:
        name: short id used in tables and JSON.
        compress: (B, N, C) → (B, M, C).
        rf_tokens: (B, N, C) → (B, M, C) tokens aligned with the RFs (token m describes RF m);
            ``compress`` itself for every method whose output is a grid.
        params: learned parameters.
        flops: analytic floating-point operations per image (multiply-add = 2).
        train_seconds: wall time of training (0 for fixed methods).
    """

    name: str
    compress: Reducer
    params: int = 0
    flops: int = 0
    learned: bool = False
    rf_tokens: Reducer | None = None
    train_seconds: float = 0.0
    history: dict[str, float] | None = None

    def aligned(self, x: Tensor) -> Tensor:
        return (self.rf_tokens or self.compress)(x)


def grid_side(n: int) -> int:
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"expected a square token grid, got N={n} tokens")
    return side


def average_pool(x: Tensor, out: int) -> Tensor:
    """Non-overlapping adaptive average pooling of the grid: (B, N, C) → (B, out², C)."""
    grid = rearrange(x, "b (h w) c -> b c h w", h=grid_side(x.shape[1]))
    return rearrange(F.adaptive_avg_pool2d(grid, out), "b c h w -> b (h w) c")


def bilinear(x: Tensor, out: int) -> Tensor:
    """Bilinear resize of the grid (no antialiasing, align_corners=False): (B, N, C) → (B, out², C)."""
    grid = rearrange(x, "b (h w) c -> b c h w", h=grid_side(x.shape[1]))
    resized = F.interpolate(grid, size=(out, out), mode="bilinear", align_corners=False)
    return rearrange(resized, "b c h w -> b (h w) c")


def rf_center_indices(rf: RFGeometry) -> Tensor:
    """(M,) flat index of each RF's centre token (slot (k//2, k//2); first valid slot if clipped)."""
    k = rf.conv.kernel_size
    center = (k // 2) * k + k // 2
    return torch.where(rf.mask[:, center], rf.indices[:, center], rf.compact[:, 0])


def tome_merge(x: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """ToMe-style bipartite soft matching, repeated until ``target`` tokens remain.

    Each round splits the current tokens alternately into sets A and B, matches every A token
    with its most cosine-similar B token and merges the ``r`` best-matched A tokens into their
    matches (size-weighted means), ``r = min(T - target, |B|)``.

    Args:
        x: (B, N, C) tokens.
    Returns:
        merged (B, target, C) and source (B, N) long: the merged token holding each original token.
    """
    b, n, c = x.shape
    total, size = x.clone(), x.new_ones(b, n)
    source = torch.arange(n, device=x.device).expand(b, n)
    batch = torch.arange(b, device=x.device)[:, None]
    while total.shape[1] > target:
        t = total.shape[1]
        a_idx = torch.arange(0, t, 2, device=x.device)
        b_idx = torch.arange(1, t, 2, device=x.device)
        r = min(t - target, len(b_idx))
        mean = total / size[..., None]
        sim = F.normalize(mean[:, a_idx], dim=-1) @ F.normalize(mean[:, b_idx], dim=-1).transpose(1, 2)
        best, match = sim.max(dim=-1)  # (B, |A|)
        order = best.argsort(dim=-1, descending=True)
        merged_a, kept_a = order[:, :r], order[:, r:]
        dst = match.gather(1, merged_a)  # (B, r) positions in B
        sum_a, size_a = total[:, a_idx], size[:, a_idx]
        sum_b = total[:, b_idx].index_put((batch.expand_as(dst), dst), sum_a[batch, merged_a],
                                          accumulate=True)
        size_b = size[:, b_idx].index_put((batch.expand_as(dst), dst), size_a[batch, merged_a],
                                          accumulate=True)
        total = torch.cat([sum_a[batch, kept_a], sum_b], dim=1)
        size = torch.cat([size_a[batch, kept_a], size_b], dim=1)
        n_kept = kept_a.shape[1]
        remap = torch.empty(b, t, dtype=torch.long, device=x.device)
        remap[batch, a_idx[kept_a]] = torch.arange(n_kept, device=x.device).expand(b, n_kept)
        remap[batch, a_idx[merged_a]] = n_kept + dst
        remap[:, b_idx] = n_kept + torch.arange(len(b_idx), device=x.device)
        source = remap.gather(1, source)
    return total / size[..., None], source


class UnshuffleLinear(nn.Module):
    """Pixel-unshuffle (space-to-channel) by ``factor`` then a linear map back to C channels.

    Shapes: (B, N, C) → (B, N / factor², C).
    """

    def __init__(self, dim: int, input_grid_size: int, output_grid_size: int) -> None:
        super().__init__()
        if input_grid_size % output_grid_size:
            raise ValueError(f"pixel-unshuffle needs an output grid that divides the input grid, "
                             f"got {input_grid_size} -> {output_grid_size}")
        self.factor = input_grid_size // output_grid_size
        self.proj = nn.Linear(self.factor**2 * dim, dim)
        with torch.no_grad():  # start as the window average
            self.proj.weight.copy_(torch.eye(dim).repeat(1, self.factor**2) / self.factor**2)
            self.proj.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        h = grid_side(x.shape[1])
        f = self.factor
        return self.proj(rearrange(x, "b (h p w q) c -> b (h w) (p q c)", h=h // f, p=f, q=f))


def _batches(num: int, batch_size: int, steps: int, generator: torch.Generator):
    """Yield ``steps`` random index batches over ``num`` items (reshuffled each pass)."""
    order = torch.randperm(num, generator=generator)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > num:
            order, pos = torch.randperm(num, generator=generator), 0
        yield order[pos : pos + batch_size]
        pos += batch_size


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def init_compressor(tokens: Tensor, output_grid_size: int, recipe: Recipe,
                    generator: torch.Generator | None = None) -> TokenCompressor:
    """The untrained ToConv compressor of ``recipe.init`` for (n, N, C) train tokens."""
    _, num_tokens, dim = tokens.shape
    init = "avg" if recipe.init == "pca" else recipe.init  # pca: fitted right after
    compressor = TokenCompressor(grid_side(num_tokens), output_grid_size, hidden_dim=dim, init=init)
    return pca_init_(compressor, tokens, generator=generator) if recipe.init == "pca" else compressor


def train_toconv(tokens: Tensor, start: TokenCompressor, recipe: Recipe, design: str = "rf",
                 adversarial: bool = True, seed: int = 0) -> tuple[TokenCompressor, dict[str, float]]:
    """Train a copy of the ``start`` compressor with :class:`CompressorObjective` on (n, N, C) tokens.

    ``adversarial=False`` trains on reconstruction alone (``wgan_weight=0``, no critic steps).
    Returns the compressor (eval mode) and the last step's losses.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    n, _, dim = tokens.shape
    compressor = copy.deepcopy(start).train()
    geometry = compressor.geometry
    if design == "rf":
        critic: nn.Module = RFCritic(dim, recipe.critic_hidden_dim, recipe.critic_depth)
        decoder: nn.Module = RFConvDecoder(dim, geometry, recipe.decoder_layers, recipe.decoder_hidden_dim)
    elif design == "global":
        critic = GlobalCritic(dim, recipe.critic_hidden_dim, recipe.critic_depth)
        decoder = GlobalDecoder(dim, geometry, recipe.global_decoder_layers)
    else:
        raise ValueError(f"design must be 'rf' or 'global', got {design!r}")
    wgan_weight = recipe.wgan_weight if adversarial else 0.0
    objective = CompressorObjective(compressor, critic, decoder, recipe.ae_weight, wgan_weight,
                                    recipe.lambda_gp)
    opt_g = torch.optim.Adam(objective.generator_param_groups(recipe.lr_compressor, recipe.lr_decoder),
                             betas=recipe.betas)
    opt_c = torch.optim.Adam(objective.critic_parameters(), recipe.lr_critic, recipe.betas)
    objective.train()
    last: dict[str, float] = {}
    critic_steps = recipe.n_critic if wgan_weight else 0
    for step, idx in enumerate(_batches(n, recipe.batch_size, recipe.steps, generator)):
        batch = tokens[idx]
        if critic_steps:
            with torch.no_grad():
                fake = compressor(batch)  # the compressor is fixed during the critic steps
        for _ in range(critic_steps):
            opt_c.zero_grad(set_to_none=True)
            critic_out = objective.critic_losses(batch, generator, fake)
            critic_out["loss"].backward()
            opt_c.step()
            last["wasserstein"] = float(critic_out["wasserstein"])
        opt_g.zero_grad(set_to_none=True)
        gen_out = objective.generator_losses(batch)
        gen_out["loss"].backward()
        if step < recipe.warmup_steps:
            objective.hold_compressor()
        nn.utils.clip_grad_norm_(objective.generator_parameters(), recipe.grad_clip)
        opt_g.step()
        last.update({k: float(gen_out[k]) for k in ("reconstruction", "adversarial", "cosine")})
    return compressor.eval(), last


def train_unshuffle(tokens: Tensor, output_grid_size: int, rf: RFGeometry, recipe: Recipe,
                    seed: int = 0) -> tuple[UnshuffleLinear, dict[str, float]]:
    """Train pixel-unshuffle + linear with an RF decoder on reconstruction of the RF's tokens."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    n, num_tokens, dim = tokens.shape
    reducer = UnshuffleLinear(dim, grid_side(num_tokens), output_grid_size)
    decoder = RFConvDecoder(dim, rf.conv, recipe.decoder_layers, recipe.decoder_hidden_dim)
    params = list(reducer.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam([{"params": reducer.parameters(), "lr": recipe.lr_baseline},
                            {"params": decoder.parameters(), "lr": recipe.lr_decoder}], betas=recipe.betas)
    rec = None
    for idx in _batches(n, recipe.batch_size, recipe.steps, generator):
        batch = tokens[idx]
        rec = reconstruction_loss(decoder(reducer(batch)), gather_rf_tokens(batch, rf), rf.mask)
        opt.zero_grad(set_to_none=True)
        rec.total.backward()
        nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
    last = {"reconstruction": rec.total.item(), "cosine": rec.cosine.item()} if rec else {}
    return reducer.eval(), last


def _frozen(module: nn.Module) -> Reducer:
    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return module(x)

    return run


def build_methods(train_tokens: Tensor, output_grid_size: int, rf: RFGeometry, recipe: Recipe,
                  seed: int = 0, log: Callable[[str], None] = print) -> list[Method]:
    """All methods at one output size; learned ones are trained here on ``train_tokens``."""
    _, num_tokens, dim = train_tokens.shape
    m = output_grid_size**2
    k = rf.conv.kernel_size
    center = rf_center_indices(rf)

    def tome_aligned(x: Tensor) -> Tensor:
        merged, source = tome_merge(x, m)
        return merged.gather(1, rearrange(source[:, center.to(x.device)], "b m -> b m 1").expand(-1, -1, dim))

    side = grid_side(num_tokens)
    t, tome_flops = num_tokens, 0
    while t > m:
        tome_flops += 2 * ((t + 1) // 2) * (t // 2) * dim + 4 * t * dim  # similarities + norms/sums
        t -= min(t - m, t // 2)
    methods = [
        Method("avg-pool", lambda x: average_pool(x, output_grid_size), flops=num_tokens * dim),
        Method("bilinear", lambda x: bilinear(x, output_grid_size), flops=8 * m * dim),
        Method("tome", lambda x: tome_merge(x, m)[0], flops=tome_flops, rf_tokens=tome_aligned),
        Method("keep-center", lambda x: x[:, center.to(x.device)]),
    ]
    trained = [
        ("toconv-rf", dict(design="rf", adversarial=True)),
        ("toconv-global", dict(design="global", adversarial=True)),
        ("toconv-recon", dict(design="rf", adversarial=False)),
    ]
    conv_flops = 2 * m * k * k * dim * dim
    started = time.perf_counter()
    start = init_compressor(train_tokens, output_grid_size, recipe, torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - started
    log(f"  {recipe.init} initialisation {side}->{output_grid_size} in {seconds:.0f} s")
    methods.append(Method("toconv-init", _frozen(start.eval()), n_params(start), conv_flops, True,
                          train_seconds=seconds))
    for name, kwargs in trained:
        started = time.perf_counter()
        compressor, history = train_toconv(train_tokens, start, recipe, seed=seed, **kwargs)
        seconds = time.perf_counter() - started
        log(f"  trained {name} {side}->{output_grid_size} in {seconds:.0f} s: {history}")
        methods.append(Method(name, _frozen(compressor), n_params(compressor), conv_flops, True,
                              train_seconds=seconds, history=history))
    if side % output_grid_size == 0:
        started = time.perf_counter()
        reducer, history = train_unshuffle(train_tokens, output_grid_size, rf, recipe, seed)
        seconds = time.perf_counter() - started
        log(f"  trained unshuffle-linear {side}->{output_grid_size} in {seconds:.0f} s: {history}")
        f2 = (side // output_grid_size) ** 2
        methods.append(Method("unshuffle-linear", _frozen(reducer), n_params(reducer),
                              2 * m * f2 * dim * dim, True, train_seconds=seconds, history=history))
    return methods
