"""Frozen readers: models fitted on real tokens only, then fed each method's compressed tokens.

Both read k-means pseudo-labels of real tokens. :class:`TokenReader` reads one token at a time
(a linear classifier), :class:`PositionReader` reads a whole token set at its grid positions (a
small transformer with 2D position embeddings), the closest stand-in here for a language model
that sees where each token sits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from toconv.metrics.grid import cell_tokens
from toconv.metrics.settings import ProbeSettings, chunks


def kmeans(x: Tensor, k: int, iters: int, generator: torch.Generator) -> Tensor:
    """Lloyd's k-means on (S, C) rows from a k-means++ start; returns (k, C) centroids (an
    emptied cluster keeps its centroid)."""
    first = torch.randint(x.shape[0], (1,), generator=generator)
    centroids = x[first.to(x.device)]
    nearest = torch.cdist(x, centroids).squeeze(1).square()
    for _ in range(k - 1):  # k-means++: the next centre drawn in proportion to squared distance
        pick = torch.multinomial(nearest.cpu() + 1e-12, 1, generator=generator).to(x.device)
        centroids = torch.cat([centroids, x[pick]])
        nearest = torch.minimum(nearest, torch.cdist(x, x[pick]).squeeze(1).square())
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(x.dtype)
    return centroids


def _training_curve(losses: list[float]) -> dict[str, float]:
    """Final loss (mean of the last tenth of steps) and its change from the tenth before."""
    tenth = max(len(losses) // 10, 1)
    last, before = losses[-tenth:], losses[-2 * tenth : -tenth] or losses[-tenth:]
    final = sum(last) / len(last)
    return {"final_loss": final, "last_change": final - sum(before) / len(before)}


class PseudoLabels:
    """k-means pseudo-labels of real tokens, on channels standardised with the train statistics."""

    def __init__(self, train_x: Tensor, settings: ProbeSettings, generator: torch.Generator) -> None:
        flat = rearrange(train_x.float(), "n t c -> (n t) c")
        self.mean, self.std = flat.mean(0), flat.std(0).clamp_min(1e-6)
        pick = torch.randperm(flat.shape[0], generator=generator)[: settings.reader_fit_tokens]
        sample = self.standardise(flat[pick.to(flat.device)])
        self.centroids = kmeans(sample, settings.reader_clusters, settings.reader_kmeans_iters, generator)

    @property
    def num_classes(self) -> int:
        return self.centroids.shape[0]

    def standardise(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std

    def __call__(self, x: Tensor) -> Tensor:
        """(..., C) tokens → (...) long labels (nearest centroid)."""
        flat = rearrange(self.standardise(x), "... c -> (...) c")
        labels = torch.cat([torch.cdist(flat[p], self.centroids).argmin(1)
                            for p in chunks(flat.shape[0], 65536)])
        return labels.reshape(x.shape[:-1])


class TokenReader:
    """A linear classifier of pseudo-labels trained on real tokens, then frozen.

    Scored per compressed token against the labels of the original tokens of its grid cell.
    """

    def __init__(self, train_x: Tensor, labels: PseudoLabels, settings: ProbeSettings,
                 seed: int = 0) -> None:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        self.labels = labels
        flat = rearrange(train_x.float(), "n t c -> (n t) c")
        target = labels(flat)
        self.linear = nn.Linear(flat.shape[-1], labels.num_classes)
        opt = torch.optim.Adam(self.linear.parameters(), settings.reader_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.reader_steps)
        losses = []
        for _ in range(settings.reader_steps):
            idx = torch.randint(flat.shape[0], (settings.reader_batch_tokens,), generator=generator)
            loss = F.cross_entropy(self.linear(labels.standardise(flat[idx])), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        self.linear.eval()
        self.curve = _training_curve(losses)

    @torch.no_grad()
    def log_probs(self, z: Tensor) -> Tensor:
        """(..., C) tokens → (..., K) log-probabilities of the labels."""
        return self.linear(self.labels.standardise(z)).log_softmax(-1)

    @torch.no_grad()
    def score(self, z: Tensor, x: Tensor) -> dict[str, float]:
        """Read (n, M, C) compressed tokens against the cells of (n, N, C) originals.

        Returns ``rf_accuracy`` (share of tokens whose predicted label is the most frequent label
        of their cell), ``rf_cross_entropy`` (against the cell's label distribution) and
        ``rf_entropy_floor`` (the cross-entropy of a perfect reader: the distribution's entropy).
        """
        out = round(z.shape[1] ** 0.5)
        acc = ce = floor = 0.0
        for part in chunks(z.shape[0], 64):
            cells = self.labels(cell_tokens(x[part], out))  # (b, M, s²)
            q = F.one_hot(cells, self.labels.num_classes).float().mean(2)  # (b, M, K)
            log_p = self.log_probs(z[part])
            acc += float((log_p.argmax(-1) == q.argmax(-1)).float().sum())
            ce += float(-(q * log_p).sum())
            floor += float(-torch.special.xlogy(q, q).sum())
        count = z.shape[0] * z.shape[1]
        return {"rf_accuracy": acc / count, "rf_cross_entropy": ce / count,
                "rf_entropy_floor": floor / count}

    @torch.no_grad()
    def token_accuracy(self, x: Tensor) -> float:
        """Share of real (n, T, C) tokens whose own label the reader predicts (its ceiling)."""
        return float((self.log_probs(x).argmax(-1) == self.labels(x)).float().mean())


def sincos_2d(positions: Tensor, width: int, temperature: float = 100.0) -> Tensor:
    """(T, 2) float (row, column) positions → (T, width) sine/cosine embedding, defined at
    fractional positions too (``width`` divisible by 4)."""
    quarter = width // 4
    freqs = temperature ** (-torch.arange(quarter, dtype=torch.float32, device=positions.device)
                            / quarter)
    angles = rearrange(positions.float(), "t a -> t a 1") * freqs  # (T, 2, width/4)
    return rearrange(torch.stack([angles.sin(), angles.cos()], dim=-1), "t a f s -> t (a f s)")


class SetToGridReader(nn.Module):
    """Reads a token set at given positions and predicts a label at any query position.

    Standardised tokens are projected and given their position embedding, a transformer encoder
    mixes them, and one cross-attention block answers each query position with K logits.
    Shapes: tokens (B, T, C), positions (T, 2), queries (Q, 2) → (B, Q, K).
    """

    def __init__(self, dim: int, num_classes: int, width: int = 128, num_layers: int = 2,
                 num_heads: int = 4) -> None:
        super().__init__()
        if width % 4 or width % num_heads:
            raise ValueError(f"width={width} must be divisible by 4 and num_heads={num_heads}")
        self.width = width
        self.proj = nn.Linear(dim, width)
        layer = nn.TransformerEncoderLayer(width, num_heads, 2 * width, 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.query = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.cross = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                  nn.Linear(2 * width, num_classes))

    def forward(self, tokens: Tensor, positions: Tensor, queries: Tensor) -> Tensor:
        h = self.proj(tokens) + sincos_2d(positions, self.width)
        memory = self.norm(self.encoder(h))
        q = repeat(self.query(sincos_2d(queries, self.width)), "q d -> b q d", b=tokens.shape[0])
        attended, _ = self.cross(q, memory, memory, need_weights=False)
        return self.head(q + attended)


def subgrid_positions(input_grid_size: int, output_grid_size: int, offset: Tensor) -> Tensor:
    """(out², 2) integer positions of a regular ``output_grid_size`` subgrid of real tokens,
    shifted by ``offset`` (2,) in [0, 1) of the subgrid's stride."""
    stride = input_grid_size / output_grid_size
    axis = torch.arange(output_grid_size, dtype=torch.float32)
    rows = ((axis + offset[0]) * stride).floor().clamp_max(input_grid_size - 1)
    cols = ((axis + offset[1]) * stride).floor().clamp_max(input_grid_size - 1)
    grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([grid_rows.flatten(), grid_cols.flatten()], dim=-1)


class PositionReader:
    """A :class:`SetToGridReader` trained on real grids only, then frozen.

    Training: real tokens at a random regular subgrid (sides ``subgrid_sides``, random offset)
    predict the pseudo-labels of random query positions of the full grid. Scoring: a method's
    compressed tokens at their window centres predict the labels of every original token.
    """

    def __init__(self, train_x: Tensor, labels: PseudoLabels, subgrid_sides: Sequence[int],
                 settings: ProbeSettings, seed: int = 0) -> None:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        n, num, dim = train_x.shape
        self.side = round(num**0.5)
        self.labels = labels
        self.grid = torch.stack(torch.meshgrid(torch.arange(self.side), torch.arange(self.side),
                                               indexing="ij"), dim=-1).reshape(-1, 2).float()
        target = torch.cat([labels(train_x[p]) for p in chunks(n, 64)])  # (n, N)
        self.model = SetToGridReader(dim, labels.num_classes, settings.position_width,
                                     settings.position_layers, settings.position_heads)
        opt = torch.optim.Adam(self.model.parameters(), settings.position_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.position_steps)
        sides = torch.tensor(list(subgrid_sides))
        losses = []
        for _ in range(settings.position_steps):
            img = torch.randint(n, (settings.position_batch_size,), generator=generator)
            side = int(sides[torch.randint(len(sides), (1,), generator=generator)])
            pos = subgrid_positions(self.side, side, torch.rand(2, generator=generator))
            visible = (pos[:, 0] * self.side + pos[:, 1]).long()
            query = torch.randperm(num, generator=generator)[: settings.position_queries]
            logits = self.model(labels.standardise(train_x[img][:, visible]), pos, self.grid[query])
            loss = F.cross_entropy(rearrange(logits, "b q k -> (b q) k"),
                                   rearrange(target[img][:, query], "b q -> (b q)"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        self.model.eval()
        self.curve = _training_curve(losses)

    @torch.no_grad()
    def score(self, z: Tensor, positions: Tensor, x: Tensor) -> dict[str, float]:
        """(n, M, C) tokens at (M, 2) positions → ``accuracy`` and ``cross_entropy`` of the
        predicted labels of every token of the (n, N, C) originals."""
        acc = ce = 0.0
        for part in chunks(z.shape[0], 32):
            logits = self.model(self.labels.standardise(z[part]), positions.to(z.device),
                                self.grid.to(z.device))
            target = self.labels(x[part])
            acc += float((logits.argmax(-1) == target).float().sum())
            ce += float(F.cross_entropy(rearrange(logits, "b q k -> (b q) k"), target.flatten(),
                                        reduction="sum"))
        count = x.shape[0] * x.shape[1]
        return {"accuracy": acc / count, "cross_entropy": ce / count}

