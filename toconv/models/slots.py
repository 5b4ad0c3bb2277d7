"""The ``slots`` family: slot attention over the encoder's tokens, with optional semantic VQ.

K = output_grid_size² slots compete for the N input tokens in a few rounds of attention
(softmax over the slots, so each token is shared out among them), each round updating the slots
with a GRU and a residual MLP (Locatello et al., 2020). The slots start from a learned
initialisation (the same for every image, so inference is deterministic), fitted by
:func:`init_slots` as k-means centroids of real tokens. Each output token is its slot's
attention-weighted mean of the input tokens plus a learned correction read from the slot state,
so an untrained, k-means-initialised compressor gives soft k-means pooling of the image and
training refines it.

With ``vq_blocks`` > 0 every output token is split into that many blocks, each quantised
against its own codebook (semantic vector quantisation, Wu, Lee and Ahn, arXiv:2402.01203).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from safetensors.torch import load_file
from torch import Tensor, nn

from toconv.geometry import ConvGeometry, RFGeometry, resolve_geometry
from toconv.models.io import (
    CONFIG_KEY,
    FAMILY_KEY,
    ConfigDict,
    read_config,
    weights_file,
    write_checkpoint,
)
from toconv.models.kmeans import kmeans
from toconv.models.registry import register_compressor, register_preset

_EPS = 1e-8


@dataclass(frozen=True)
class SlotGeometry(ConvGeometry):
    """The token counts of a slots compressor (N = input_grid_size² in, K = output_grid_size²
    out), as the grid geometry with the same counts, which integrations and metrics read."""

    def describe(self) -> str:
        i, k = self.input_grid_size, self.num_outputs
        return f"{i}×{i} → {k} slots (slot attention)"


@dataclass
class SlotConfig(ConfigDict):
    """Everything needed to rebuild a :class:`SlotCompressor`; travels in checkpoint metadata.

    ``vq_blocks``: blocks per token for semantic VQ (0: off), each with ``codebook_size`` codes;
    ``commitment``: weight of the commitment loss; ``vq_decay``: EMA decay of the codebooks.
    """

    config_name: ClassVar[str] = "slots"

    input_grid_size: int = 24
    output_grid_size: int = 8
    hidden_dim: int = 1024
    out_dim: int | None = None
    cls_token: bool = False
    iterations: int = 3
    vq_blocks: int = 0
    codebook_size: int = 64
    commitment: float = 0.25
    vq_decay: float = 0.99

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.vq_blocks < 0 or (self.vq_blocks and self.output_dim % self.vq_blocks):
            raise ValueError(f"vq_blocks must be 0 (no VQ) or divide the output width "
                             f"{self.output_dim}, got {self.vq_blocks}")
        if self.vq_blocks and self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.cls_token and self.output_dim != self.hidden_dim:
            raise ValueError(f"cls_token=True passes the CLS token through unchanged, so out_dim "
                             f"must equal hidden_dim={self.hidden_dim}, got {self.out_dim}")
        resolve_geometry(self.input_grid_size, self.output_grid_size)  # raises for impossible counts

    @property
    def geometry(self) -> SlotGeometry:
        """The grid geometry with the same token counts (N in, K out)."""
        return SlotGeometry(**asdict(resolve_geometry(self.input_grid_size, self.output_grid_size)))

    @property
    def num_slots(self) -> int:
        return self.output_grid_size**2

    @property
    def output_dim(self) -> int:
        return self.hidden_dim if self.out_dim is None else self.out_dim


@dataclass(frozen=True, eq=False)
class SlotFields(RFGeometry):
    """The slots' receptive fields: ``masks`` maps (B, N, C) tokens to each slot's attention
    over them, (B, K, N). The grid fields of the same token counts (the parent's attributes) give
    the RF layout the trainer's reconstruction metrics read."""

    masks: Callable[[Tensor], Tensor] | None = None


class _StraightThrough(torch.autograd.Function):
    """Forward: the codes ``q``. Backward: the gradient passes to ``z`` unchanged (straight
    through), plus the gradient of the commitment loss ``beta · mean((z − sg(q))²)``."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, q: Tensor, beta: float) -> Tensor:
        ctx.save_for_backward(z - q)
        ctx.beta = beta
        return q.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (diff,) = ctx.saved_tensors
        return grad + (2 * ctx.beta / diff.numel()) * diff, None, None


class SemanticVQ(nn.Module):
    """Block-wise vector quantisation: each (…, D) token is split into M blocks of D/M, block m
    is replaced by the nearest code of codebook m.

    Gradients pass straight through, with the commitment loss's added
    (:class:`_StraightThrough`). Codebooks follow exponential moving averages of the blocks
    assigned to them, updated on training-mode forward passes whose tokens carry gradients (not
    on the critic's no-grad passes, nor in a frozen compressor); a code whose share of the blocks falls below a tenth of uniform is
    restarted at a random block of the batch.
    """

    def __init__(self, dim: int, blocks: int, codebook_size: int, commitment: float = 0.25,
                 decay: float = 0.99) -> None:
        super().__init__()
        self.blocks, self.size, self.commitment, self.decay = blocks, codebook_size, commitment, decay
        codebooks = torch.randn(blocks, codebook_size, dim // blocks)
        self.register_buffer("codebooks", codebooks)  # (M, S, d)
        self.register_buffer("share", torch.full((blocks, codebook_size), 1 / codebook_size))
        self.register_buffer("share_sum", codebooks / codebook_size)

    def _blocks(self, z: Tensor) -> Tensor:
        return rearrange(z, "b k (m d) -> m (b k) d", m=self.blocks)

    def codes(self, z: Tensor) -> Tensor:
        """(B, K, D) tokens → (B, K, M) code indices."""
        return rearrange(self._nearest(self._blocks(z)), "m (b k) -> b k m", b=z.shape[0])

    def _nearest(self, parts: Tensor) -> Tensor:
        books = self.codebooks.to(parts.dtype)
        dist = (books.pow(2).sum(-1).unsqueeze(1) - 2 * parts @ books.transpose(1, 2))
        return dist.argmin(dim=-1)  # (M, n)

    def forward(self, z: Tensor) -> Tensor:
        """(B, K, D) → (B, K, D) quantised."""
        parts = self._blocks(z)
        codes = self._nearest(parts.detach())
        if self.training and z.requires_grad:
            self._update(parts.detach().float(), codes)
            codes = self._nearest(parts.detach())
        q = self.codebooks.to(z.dtype).gather(1, repeat(codes, "m n -> m n d", d=parts.shape[-1]))
        out = _StraightThrough.apply(parts, q, self.commitment)
        return rearrange(out, "m (b k) d -> b k (m d)", b=z.shape[0])

    @torch.no_grad()
    def _update(self, parts: Tensor, codes: Tensor) -> None:
        onehot = F.one_hot(codes, self.size).to(parts.dtype)  # (M, n, S)
        n = parts.shape[1]
        self.share.lerp_(onehot.mean(dim=1), 1 - self.decay)
        self.share_sum.lerp_(onehot.transpose(1, 2) @ parts / n, 1 - self.decay)
        self.codebooks.copy_(self.share_sum / self.share.clamp_min(_EPS).unsqueeze(-1))
        dead = self.share < 0.1 / self.size
        if dead.any():
            pick = torch.randint(n, (self.blocks, self.size), device=parts.device)
            fresh = parts.gather(1, repeat(pick, "m s -> m s d", d=parts.shape[-1]))
            self.codebooks.copy_(torch.where(dead.unsqueeze(-1), fresh, self.codebooks))
            self.share.copy_(torch.where(dead, 1 / self.size, self.share))
            self.share_sum.copy_(self.codebooks * self.share.unsqueeze(-1))

    @torch.no_grad()
    def fit_(self, z: Tensor, generator: torch.Generator | None = None) -> None:
        """Set each codebook to k-means centroids of its blocks of (B, K, D) tokens ``z``."""
        parts = self._blocks(z.float())
        if parts.shape[1] < self.size:
            raise ValueError(f"fitting {self.size} codes needs at least {self.size} tokens, got "
                             f"{parts.shape[1]}")
        centroids, labels = kmeans(parts, self.size, generator=generator)
        self.codebooks.copy_(centroids)
        self.share.copy_(F.one_hot(labels, self.size).float().mean(dim=1))
        self.share_sum.copy_(centroids * self.share.unsqueeze(-1))

    def usage(self) -> dict[str, float]:
        """Codebook usage from the running code shares: ``used`` (fraction of codes above a tenth
        of uniform use) and ``perplexity`` (exp of the shares' entropy, mean over blocks; S when
        all codes are used equally)."""
        share = self.share / self.share.sum(-1, keepdim=True)
        entropy = -(share * share.clamp_min(_EPS).log()).sum(-1)
        return {"used": float((self.share >= 0.1 / self.size).float().mean()),
                "perplexity": float(entropy.exp().mean())}


@register_compressor("slots")
class SlotCompressor(nn.Module):
    """Group a token grid into K = output_grid_size² slots by slot attention.

    Shapes: (B, N, C) → (B, K, C_out); with ``cls_token=True`` a leading CLS token passes through
    unchanged: (B, 1+N, C) → (B, 1+K, C). Deterministic in eval mode.
    """

    config_class: ClassVar[type[SlotConfig]] = SlotConfig
    family: ClassVar[str]

    def __init__(self, input_grid_size: int = 24, output_grid_size: int = 8, hidden_dim: int = 1024,
                 out_dim: int | None = None, cls_token: bool = False, iterations: int = 3,
                 vq_blocks: int = 0, codebook_size: int = 64, commitment: float = 0.25,
                 vq_decay: float = 0.99) -> None:
        super().__init__()
        self.config = cfg = SlotConfig(input_grid_size, output_grid_size, hidden_dim, out_dim,
                                       cls_token, iterations, vq_blocks, codebook_size, commitment,
                                       vq_decay)
        self.geometry = cfg.geometry
        d = hidden_dim
        self.slots_init = nn.Parameter(torch.randn(cfg.num_slots, d))
        self.norm_input, self.norm_slots, self.norm_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.to_q, self.to_k, self.to_v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.gru = nn.GRUCell(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.pool_proj = nn.Identity() if cfg.output_dim == d else nn.Linear(d, cfg.output_dim)
        self.readout = nn.Linear(d, cfg.output_dim)
        self.vq = (SemanticVQ(cfg.output_dim, vq_blocks, codebook_size, commitment, vq_decay)
                   if vq_blocks else None)
        self._init_soft_kmeans()

    @torch.no_grad()
    def _init_soft_kmeans(self) -> None:
        """Start as soft k-means on the normalised tokens: identity query/key/value maps, a GRU
        that takes the round's update, and a residual MLP and readout that add nothing."""
        d = self.config.hidden_dim
        for linear in (self.to_q, self.to_k, self.to_v):
            linear.weight.copy_(torch.eye(d))
        w_ih, w_hh = self.gru.weight_ih.view(3, d, d), self.gru.weight_hh.view(3, d, d)
        w_ih[1:].zero_()
        w_hh[1:].zero_()
        w_ih[2].copy_(0.1 * torch.eye(d))  # candidate ≈ 0.1·update: tanh is near-linear there
        self.gru.bias_ih.zero_()
        self.gru.bias_hh.zero_()
        self.gru.bias_ih.view(3, d)[1].fill_(-4.0)  # update gate ≈ 0.02: keep little of the old slot
        for layer in (self.mlp[-1], self.readout):
            layer.weight.zero_()
            layer.bias.zero_()

    @classmethod
    def from_config(cls, config: SlotConfig) -> SlotCompressor:
        return cls(**config.to_dict())

    @property
    def rf(self) -> SlotFields:
        """Each slot's attention mask (computed per image), beside the grid RFs of the same counts."""
        grid = RFGeometry.from_conv(self.geometry)
        return SlotFields(grid.conv, grid.indices, grid.mask, grid.compact, masks=self.masks)

    @property
    def num_slots(self) -> int:
        return self.config.num_slots

    @property
    def num_input_tokens(self) -> int:
        return self.geometry.num_inputs + int(self.config.cls_token)

    @property
    def num_output_tokens(self) -> int:
        return self.num_slots + int(self.config.cls_token)

    def _attention(self, slots: Tensor, keys: Tensor) -> Tensor:
        """(B, K, N) attention, normalised over the slots (they compete for every token)."""
        q = self.to_q(self.norm_slots(slots))
        logits = einsum(q, keys, "b k d, b n d -> b k n") / q.shape[-1] ** 0.5
        return logits.softmax(dim=1)

    def _group(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Slot states (B, K, D) and final attention masks (B, K, N) of (B, N, C) patch tokens."""
        x = self.norm_input(x)
        keys, values = self.to_k(x), self.to_v(x)
        slots = repeat(self.slots_init, "k d -> b k d", b=x.shape[0])
        for _ in range(self.config.iterations):
            attn = self._attention(slots, keys)
            weights = attn / (attn.sum(dim=-1, keepdim=True) + _EPS)
            updates = einsum(weights, values, "b k n, b n d -> b k d")
            slots = rearrange(self.gru(rearrange(updates, "b k d -> (b k) d"),
                                       rearrange(slots, "b k d -> (b k) d")),
                              "(b k) d -> b k d", b=x.shape[0])
            slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, self._attention(slots, keys)

    def _patches(self, x: Tensor) -> Tensor:
        """The patch tokens of a checked input, in the weights' dtype."""
        self._check_input(x)
        grid = x[:, 1:] if self.config.cls_token else x
        return grid.to(self.slots_init.dtype)

    def _continuous(self, grid: Tensor) -> Tensor:
        """Output tokens before VQ, (B, K, C_out), of (B, N, C) patch tokens: each slot's
        attention-weighted mean of them plus the readout of its state."""
        slots, masks = self._group(grid)
        weights = masks / (masks.sum(dim=-1, keepdim=True) + _EPS)
        return self.pool_proj(einsum(weights, grid, "b k n, b n c -> b k c")) + self.readout(slots)

    def forward(self, x: Tensor) -> Tensor:
        """Computes in the weights' dtype; the result has the input's dtype."""
        z = self._continuous(self._patches(x))
        z = (z if self.vq is None else self.vq(z)).to(x.dtype)
        return torch.cat([x[:, :1], z], dim=1) if self.config.cls_token else z

    def masks(self, x: Tensor) -> Tensor:
        """(B, K, N) attention of every slot over the patch tokens (sums to 1 over the slots)."""
        return self._group(self._patches(x))[1]

    def assignments(self, x: Tensor) -> Tensor:
        """(B, N) long: each patch token's slot (argmax of the final attention)."""
        return self.masks(x).argmax(dim=1)

    def codes(self, x: Tensor) -> Tensor:
        """(B, K, M) long: the VQ code of every block of every slot token."""
        if self.vq is None:
            raise ValueError("codes needs semantic VQ: this compressor has vq_blocks=0")
        return self.vq.codes(self._continuous(self._patches(x)))

    def codebook_usage(self) -> dict[str, float]:
        """Semantic VQ's codebook usage (:meth:`SemanticVQ.usage`); empty without VQ."""
        return {} if self.vq is None else self.vq.usage()

    def flops(self) -> int:
        """Analytic floating-point operations per image (multiply-add = 2)."""
        cfg, n, k = self.config, self.geometry.num_inputs, self.num_slots
        d, c, o = cfg.hidden_dim, cfg.hidden_dim, cfg.output_dim
        rounds = cfg.iterations
        projections = 2 * n * c * d * 2 + 2 * k * d * d * (rounds + 1)
        attention = 2 * k * n * d * (2 * rounds + 1)
        updates = rounds * 2 * k * (6 * d * d + 2 * d * d)
        readout = 2 * k * n * c + 2 * k * d * o + (0 if o == c else 2 * k * c * o)
        quantise = 2 * k * o * cfg.codebook_size if cfg.vq_blocks else 0
        return projections + attention + updates + readout + quantise

    def _check_input(self, x: Tensor) -> None:
        cfg = self.config
        expected = f"(batch, {self.num_input_tokens}, {cfg.hidden_dim})"
        if x.ndim != 3 or x.shape[1] != self.num_input_tokens or x.shape[2] != cfg.hidden_dim:
            grid = f"{cfg.input_grid_size}x{cfg.input_grid_size} grid" + (" plus CLS" if cfg.cls_token else "")
            raise ValueError(f"{self.name} expects tokens of shape {expected} ({grid}), got "
                             f"{tuple(x.shape)}")

    @property
    def name(self) -> str:
        return f"SlotCompressor [{self.config.input_grid_size}to{self.num_slots} slots]"

    def __repr__(self) -> str:
        cfg = self.config
        vq = f", VQ {cfg.vq_blocks}x{cfg.codebook_size}" if cfg.vq_blocks else ""
        return (f"{self.name}: {cfg.input_grid_size}×{cfg.input_grid_size} tokens → {self.num_slots} "
                f"slots, {cfg.iterations} rounds{vq}")

    def save_pretrained(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write weights and config as safetensors (a ``.safetensors`` file, or a folder that
        receives ``model.safetensors``); returns the file written."""
        return write_checkpoint(self, path, {
            **(metadata or {}), FAMILY_KEY: self.family,
            CONFIG_KEY: json.dumps(self.config.to_dict(), sort_keys=True),
            "hidden_dim": str(self.config.hidden_dim), "out_dim": str(self.config.output_dim),
            "slots": str(self.num_slots)})

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu",
                        **expected: Any) -> SlotCompressor:
        """Load a compressor saved by :meth:`save_pretrained`; keyword arguments name config
        fields the caller expects (a mismatch raises ``ValueError`` naming both)."""
        file, family, data = read_config(path)
        if family != cls.family:
            raise ValueError(f"{file} holds a {family!r} compressor, expected {cls.family!r}")
        config = SlotConfig.from_dict(data)
        wanted = SlotConfig.from_dict({**data, **expected})
        if wanted != config:
            raise ValueError(f"checkpoint {file} holds slots {config.to_dict()}, but "
                             f"{ {k: v for k, v in wanted.to_dict().items() if data.get(k) != v} } "
                             f"was expected")
        model = cls.from_config(config)
        model.load_state_dict(load_file(str(weights_file(file)), device=str(map_location)), strict=True)
        return model.to(map_location)


@torch.no_grad()
def init_slots(tokens: Tensor, output_grid_size: int, seed: int = 0, max_points: int = 16384,
               **config: Any) -> SlotCompressor:
    """The untrained compressor for (B, N, C) training tokens: its slot initialisation set to
    k-means centroids of the normalised tokens (at most ``max_points`` of them, drawn with a
    generator seeded by ``seed``) and, with VQ, its codebooks to k-means centroids of the start's
    output blocks. ``config``: further :class:`SlotConfig` fields. Fitted on, and returned on,
    the tokens' device; the result depends on ``tokens`` and ``seed`` only (the global random
    state is left untouched)."""
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens of shape (B, N, C), got {tuple(tokens.shape)}")
    _, n, dim = tokens.shape
    side = round(n**0.5)
    if side * side != n:
        raise ValueError(f"expected tokens of a square grid, got N={n}")
    with torch.random.fork_rng(devices=[]):  # the weights k-means does not set depend on seed only
        torch.manual_seed(seed)
        model = SlotCompressor(side, output_grid_size, hidden_dim=dim, **config)
    model = model.to(tokens.device).eval()
    generator = torch.Generator().manual_seed(seed)
    points = model.norm_input(rearrange(tokens.float(), "b n c -> (b n) c"))
    if len(points) > max_points:
        points = points[torch.randperm(len(points), generator=generator)[:max_points].to(points.device)]
    centroids, _ = kmeans(points.unsqueeze(0), model.num_slots, generator=generator)
    model.slots_init.copy_(centroids[0])
    if model.vq is not None:
        model.vq.fit_(model._continuous(tokens.float()), generator)
    return model


# Encoders whose token grids the presets fit: (name, grid side, channel width, output sides).
_ENCODERS = (("clip-l336", 24, 1024, (12, 8, 6)), ("dinov2-s336", 24, 384, (12, 8, 6)),
             ("siglip-384", 27, 1152, (9,)))

for _encoder, _grid, _width, _sides in _ENCODERS:
    for _out in _sides:
        register_preset(f"{_encoder}-slots{_out * _out}", "slots", input_grid_size=_grid,
                        output_grid_size=_out, hidden_dim=_width)
