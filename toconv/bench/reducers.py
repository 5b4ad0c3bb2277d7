"""Token reducers the benchmark compares ToConv with: (B, N, C) square grid → (B, M, C)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn

from toconv.data import step_batches
from toconv.geometry import RFGeometry, gather_rf_tokens, sample_rf_tokens
from toconv.metrics import cell_geometry, cell_tokens
from toconv.objective import (
    RFConvDecoder,
    RFCritic,
    critic_loss,
    generator_loss,
    gradient_penalty,
    reconstruction_loss,
)
from toconv.recipes import Recipe


def grid_side(n: int) -> int:
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"expected a square token grid, got N={n} tokens")
    return side


def average_pool(x: Tensor, out: int) -> Tensor:
    """Non-overlapping adaptive average pooling of the grid: (B, N, C) → (B, out², C)."""
    grid = rearrange(x, "b (h w) c -> b c h w", h=grid_side(x.shape[1]))
    return rearrange(F.adaptive_avg_pool2d(grid, out), "b c h w -> b (h w) c")


def antialiased_resize(x: Tensor, out: int) -> Tensor:
    """Antialiased bilinear resize of the grid (a triangle filter as wide as two output tokens,
    like an image resize): (B, N, C) → (B, out², C)."""
    grid = rearrange(x, "b (h w) c -> b c h w", h=grid_side(x.shape[1]))
    resized = F.interpolate(grid, size=(out, out), mode="bilinear", align_corners=False, antialias=True)
    return rearrange(resized, "b c h w -> b (h w) c")


def weighted_window(x: Tensor, rf: RFGeometry, weights: Tensor) -> Tensor:
    """Each window's tokens summed with fixed (k²,) slot ``weights`` (row-major; padded slots
    read zeros): (B, N, C) → (B, M, C)."""
    return einsum(gather_rf_tokens(x, rf), weights.to(x), "b m r c, r -> b m c")


def mode_pool(x: Tensor, out: int, temperature: float = 0.05, steps: int = 3) -> Tensor:
    """Each grid cell's tokens mean-shifted towards their densest direction: starting from the
    cell mean, ``steps`` times the softmax(cosine / ``temperature``)-weighted mean of the cell's
    tokens. A token near the cell's dominant content (its mode), not its average:
    (B, N, C) → (B, out², C)."""
    cells = cell_tokens(x, out)  # (B, M, s², C)
    unit = F.normalize(cells, dim=-1)
    token = cells.mean(dim=2)
    for _ in range(steps):
        similarity = einsum(unit, F.normalize(token, dim=-1), "b m s c, b m c -> b m s")
        token = einsum((similarity / temperature).softmax(dim=-1), cells, "b m s, b m s c -> b m c")
    return token


def rf_center_indices(rf: RFGeometry) -> Tensor:
    """(M,) flat index of each RF's centre token (slot (k//2, k//2); first valid slot if clipped)."""
    center = rf.center_slot
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


def tome_flops(num_tokens: int, target: int, dim: int) -> int:
    """Analytic FLOPs of :func:`tome_merge` per image (similarities, norms and sums)."""
    t, flops = num_tokens, 0
    while t > target:
        flops += 2 * ((t + 1) // 2) * (t // 2) * dim + 4 * t * dim
        t -= min(t - target, t // 2)
    return flops


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


def train_unshuffle(tokens: Tensor, rf: RFGeometry, recipe: Recipe, lr: float,
                    seed: int = 0) -> tuple[UnshuffleLinear, dict[str, float]]:
    """Train pixel-unshuffle + linear with an RF decoder (the recipe's) on reconstruction of the
    RF's tokens, with the recipe's batches, steps, decoder rate and clipping; ``lr`` for the map."""
    torch.manual_seed(seed)
    n, _, dim = tokens.shape
    reducer = UnshuffleLinear(dim, rf.conv.input_grid_size, rf.conv.output_grid_size)
    spec = recipe.decoder
    decoder = RFConvDecoder(dim, rf.conv, spec.num_layers, spec.width)
    params = list(reducer.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam([{"params": reducer.parameters(), "lr": lr},
                            {"params": decoder.parameters(), "lr": recipe.lr_decoder}],
                           betas=tuple(recipe.betas))
    rec = None
    for idx in step_batches(n, recipe.batch_size, recipe.steps, seed):
        batch = tokens[idx]
        rec = reconstruction_loss(decoder(reducer(batch)), gather_rf_tokens(batch, rf), rf.mask)
        opt.zero_grad(set_to_none=True)
        rec.total.backward()
        if recipe.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
    last = {"reconstruction": rec.total.item(), "cosine": rec.cosine.item()} if rec else {}
    return reducer.eval(), last


class CellSelector(nn.Module):
    """Attention over each grid cell's tokens, queried by the cell's mean: a token that can be
    chosen by content. The query map starts at zero, so the untrained selector is average pooling.
    Tokens are standardised (``mean``, ``std``: (C,)) inside the scores only.

    Shapes: (B, N, C) → (B, out², C).
    """

    def __init__(self, mean: Tensor, std: Tensor, out: int, width: int = 64) -> None:
        super().__init__()
        self.out = out
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        dim = mean.shape[-1]
        self.query = nn.Linear(dim, width, bias=False)
        self.key = nn.Linear(dim, width, bias=False)
        nn.init.zeros_(self.query.weight)

    def weights(self, cells: Tensor) -> Tensor:
        """(B, M, s², C) cell tokens → (B, M, s²) attention over each cell."""
        h = (cells - self.mean) / self.std
        scores = einsum(self.query(h.mean(dim=2)), self.key(h), "b m d, b m s d -> b m s")
        return (scores / self.query.out_features**0.5).softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        cells = cell_tokens(x, self.out)
        return einsum(self.weights(cells), cells, "b m s, b m s c -> b m c")


def train_selection(tokens: Tensor, out: int, critic_weight: float, seed: int = 0, steps: int = 300,
                    batch_size: int = 16, lr: float = 1e-3,
                    n_critic: int = 5) -> tuple[CellSelector, dict[str, float]]:
    """Train a :class:`CellSelector` on (n, N, C) tokens with ToConv's two signals inside each
    cell: the squared distance of the chosen token to every token of its cell (the RF rebuilt by a
    copy of the token: it pulls towards the centre) and, weighted by ``critic_weight``, an RF
    critic (WGAN-GP, width 256, rate 1e-4, ``n_critic`` steps per step) comparing it with one token drawn from its cell
    (it pulls towards a token that looks real). ``critic_weight=0``: the first signal alone."""
    torch.manual_seed(seed)
    n, _, dim = tokens.shape
    flat = rearrange(tokens, "n t c -> (n t) c")
    mean, std = flat.mean(0), flat.std(0)
    selector = CellSelector(mean, std, out)
    critic = RFCritic(dim, 256, 3)
    cells_rf = RFGeometry.from_conv(cell_geometry(grid_side(tokens.shape[1]), out))
    opt = torch.optim.Adam(selector.parameters(), lr, betas=(0.5, 0.9))
    critic_opt = torch.optim.Adam(critic.parameters(), 1e-4, betas=(0.5, 0.9))
    generator = torch.Generator().manual_seed(seed)
    last: dict[str, float] = {}
    for idx in step_batches(n, batch_size, steps, seed):
        x = tokens[idx]
        z = selector(x)  # the critic steps leave the selector as it is: one forward serves them all
        fake = (z.detach() - mean) / std
        for _ in range(n_critic if critic_weight else 0):
            real = (sample_rf_tokens(x, cells_rf, generator) - mean) / std
            loss = critic_loss(critic(real), critic(fake)) + gradient_penalty(critic, real, fake, generator=generator)
            critic_opt.zero_grad(set_to_none=True)
            loss.backward()
            critic_opt.step()
            last["critic"] = loss.item()
        central = ((cell_tokens(x, out) - z[:, :, None]) / std).pow(2).mean()
        adversarial = generator_loss(critic((z - mean) / std)) if critic_weight else z.new_zeros(())
        opt.zero_grad(set_to_none=True)
        (central + critic_weight * adversarial).backward()
        opt.step()
        last.update(central=central.item(), adversarial=adversarial.item())
    return selector.eval(), last
