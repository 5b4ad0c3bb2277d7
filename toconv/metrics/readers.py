"""Readers: k-means pseudo-labels of real tokens and the models that read them from compressed tokens.

* :class:`TokenReader` is fitted on real tokens only, then frozen and fed compressed tokens one at
  a time: a linear classifier, or a two-layer GELU MLP (LLaVA's projector shape) with a linear
  head. It is scored against the labels of the original tokens each compressed token covers.
* :class:`TrainedReader` is what LLaVA pretraining does with compressed tokens: a fresh
  :class:`QueryReader` (MLP projector, small transformer with 2D positions, one query per original
  position) trained on one method's compressed training grids to predict the labels of all the
  original tokens, then scored on validation. It needs no grid correspondence.

Scores come per validation image (sums and counts), so a caller can bootstrap images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from toconv.metrics.settings import ProbeSettings, chunks
from toconv.models.kmeans import kmeans


def training_curve(losses: list[float]) -> dict[str, float]:
    """Final loss (mean of the last tenth of steps) and its change from the tenth before: a
    flat curve has ``last_change`` near 0."""
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
        self.centroids = kmeans(sample[None], settings.reader_clusters, settings.reader_kmeans_iters,
                                generator, plus_plus=True)[0][0]

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


def covered_histograms(labels: Tensor, assignments: Tensor, num_tokens: int, num_classes: int) -> Tensor:
    """Label counts of the original tokens each compressed token covers.

    Args:
        labels: (n, N) long labels of the original tokens.
        assignments: (n, N) or (N,) long: the compressed token that covers each original token.
        num_tokens: M, the compressed tokens per image.
    Returns:
        (n, M, K) float counts.
    """
    assignments = assignments.expand_as(labels).to(labels.device)
    one_hot = F.one_hot(labels, num_classes).float()
    hist = one_hot.new_zeros(labels.shape[0], num_tokens, num_classes)
    return hist.scatter_add_(1, repeat(assignments, "n t -> n t k", k=num_classes), one_hot)


class TokenReader:
    """A classifier of pseudo-labels trained on real tokens, then frozen: ``hidden=None`` a linear
    map, else a two-layer GELU MLP of width ``hidden`` (LLaVA's projector) with a linear head."""

    def __init__(self, train_x: Tensor, labels: PseudoLabels, steps: int, lr: float,
                 batch_tokens: int, seed: int = 0, hidden: int | None = None) -> None:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        self.labels = labels
        flat = rearrange(train_x.float(), "n t c -> (n t) c")
        target = labels(flat)
        dim, k = flat.shape[-1], labels.num_classes
        self.model = nn.Linear(dim, k) if hidden is None else nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.Linear(hidden, k))
        opt = torch.optim.Adam(self.model.parameters(), lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        losses = []
        for _ in range(steps):
            idx = torch.randint(flat.shape[0], (batch_tokens,), generator=generator).to(flat.device)
            loss = F.cross_entropy(self.model(labels.standardise(flat[idx])), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        self.model.eval()
        self.curve = training_curve(losses)

    @torch.no_grad()
    def log_probs(self, z: Tensor) -> Tensor:
        """(..., C) tokens → (..., K) log-probabilities of the labels."""
        return self.model(self.labels.standardise(z)).log_softmax(-1)

    @torch.no_grad()
    def score(self, z: Tensor, x_labels: Tensor, assignments: Tensor) -> dict[str, Tensor]:
        """Read (n, M, C) compressed tokens against the originals they cover.

        Args:
            z: (n, M, C) compressed tokens.
            x_labels: (n, N) labels of the original tokens.
            assignments: (n, N) or (N,) compressed token covering each original token.
        Returns:
            per image (n,) float64: ``correct`` (tokens whose predicted label is the most frequent
            label of the originals they cover), ``cross_entropy`` (summed over tokens, against
            that label distribution) and ``count`` (tokens that cover any original).
        """
        out = {key: [] for key in ("correct", "cross_entropy", "count")}
        for part in chunks(z.shape[0], 64):
            a = assignments[part] if assignments.ndim == 2 else assignments
            hist = covered_histograms(x_labels[part], a, z.shape[1], self.labels.num_classes)
            total = hist.sum(-1)
            covers = total > 0
            q = hist / total.clamp_min(1)[..., None]
            log_p = self.log_probs(z[part])
            out["correct"].append(((log_p.argmax(-1) == hist.argmax(-1)) & covers).sum(1))
            out["cross_entropy"].append(-(q * log_p).sum((1, 2)))
            out["count"].append(covers.sum(1))
        return {key: torch.cat(v).double().cpu() for key, v in out.items()}

    @torch.no_grad()
    def score_tokens(self, x: Tensor, x_labels: Tensor) -> dict[str, Tensor]:
        """Read (n, N, C) tokens one by one against (n, N) labels of their own positions (tokens
        rebuilt from a compressed grid, say): per image (n,) float64 ``correct``, ``cross_entropy``
        (summed) and ``count``."""
        out = {key: [] for key in ("correct", "cross_entropy", "count")}
        for part in chunks(x.shape[0], 64):
            log_p, target = self.log_probs(x[part]), x_labels[part]
            out["correct"].append((log_p.argmax(-1) == target).sum(1))
            out["cross_entropy"].append(-log_p.gather(-1, target[..., None]).sum((1, 2)))
            out["count"].append(torch.full((target.shape[0],), target.shape[1]))
        return {key: torch.cat(v).double().cpu() for key, v in out.items()}

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


def token_positions(num_tokens: int, input_grid_size: int) -> Tensor:
    """(M, 2) positions of M compressed tokens in input-token coordinates: token m at the centre
    of cell m of a √M × √M grid over the input grid (row-major). Any method's m-th token gets the
    same position, so a trained reader learns what each index means."""
    side = round(num_tokens**0.5)
    if side * side != num_tokens:
        raise ValueError(f"expected a square number of compressed tokens, got {num_tokens}")
    axis = (torch.arange(side, dtype=torch.float32) + 0.5) * input_grid_size / side - 0.5
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=-1)


def grid_positions(side: int) -> Tensor:
    """(side², 2) integer (row, column) positions of a full grid, row-major."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=-1).float()


class QueryReader(nn.Module):
    """Reads a token set at its positions and answers a label at any query position.

    An MLP projector (LLaVA's shape) and a 2D position embedding, a transformer encoder over the
    tokens, then one cross-attention block from each query position. With ``locality`` each head
    of that block adds ``-exp(s_h)·d²`` to its logits, d the distance from the query to a token in
    input-token units and s_h learned (initial scales 3.2 down to 0.03 per squared unit, sharp to
    broad): a query can lean on the tokens at and around its own position.
    Shapes: tokens (B, T, C), positions (T, 2), queries (Q, 2) → logits (B, Q, K).
    """

    def __init__(self, dim: int, num_classes: int, width: int = 128, num_layers: int = 2,
                 num_heads: int = 4, locality: bool = False) -> None:
        super().__init__()
        if width % 4 or width % num_heads:
            raise ValueError(f"width={width} must be divisible by 4 and num_heads={num_heads}")
        self.width = width
        self.log_locality = nn.Parameter(torch.linspace(1.15, -3.45, num_heads)) if locality else None
        self.projector = nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Linear(width, width))
        layer = nn.TransformerEncoderLayer(width, num_heads, 2 * width, 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.query = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.cross = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_classes))

    def forward(self, tokens: Tensor, positions: Tensor, queries: Tensor) -> Tensor:
        h = self.projector(tokens) + sincos_2d(positions, self.width)
        memory = self.norm(self.encoder(h))
        q = repeat(self.query(sincos_2d(queries, self.width)), "q d -> b q d", b=tokens.shape[0])
        bias = None
        if self.log_locality is not None:
            distance = torch.cdist(queries.float(), positions.float()).pow(2)  # (Q, T)
            bias = repeat(-self.log_locality.exp()[:, None, None] * distance, "h q t -> (b h) q t",
                          b=tokens.shape[0])
        attended, _ = self.cross(q, memory, memory, attn_mask=bias, need_weights=False)
        return self.head(q + attended)


class TrainedReader:
    """A :class:`QueryReader` trained on one method's compressed training grids, every method
    with the same budget (``settings.trained_*``), to predict the labels of all the original tokens.

    Args:
        train_z: (n, M, C) the method's compressed training tokens.
        train_labels: (n, N) labels of the original training tokens (a square grid).
        labels: the pseudo-labels (their standardisation is applied to the tokens).
    """

    def __init__(self, train_z: Tensor, train_labels: Tensor, labels: PseudoLabels,
                 settings: ProbeSettings, seed: int = 0) -> None:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        n, m, dim = train_z.shape
        side = round(train_labels.shape[1] ** 0.5)
        self.labels, self.queries = labels, grid_positions(side)
        self.positions = token_positions(m, side)
        self.model = QueryReader(dim, labels.num_classes, settings.trained_width,
                                 settings.trained_layers, settings.trained_heads, settings.trained_locality)
        opt = torch.optim.Adam(self.model.parameters(), settings.trained_lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.trained_lr, total_steps=settings.trained_steps,
                                                    pct_start=0.1)
        losses = []
        for _ in range(settings.trained_steps):
            img = torch.randint(n, (settings.trained_batch_size,), generator=generator)
            query = torch.randperm(self.queries.shape[0], generator=generator)[: settings.trained_queries]
            logits = self.model(labels.standardise(train_z[img]), self.positions, self.queries[query])
            loss = F.cross_entropy(rearrange(logits, "b q k -> (b q) k"),
                                   rearrange(train_labels[img][:, query], "b q -> (b q)"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        self.model.eval()
        self.curve = training_curve(losses)

    @torch.no_grad()
    def score(self, z: Tensor, x_labels: Tensor) -> dict[str, Tensor]:
        """(n, M, C) validation tokens → per image (n,) float64 ``correct`` and ``cross_entropy``
        (summed over the originals) and ``count`` (N) of the labels of all (n, N) originals."""
        out = {key: [] for key in ("correct", "cross_entropy", "count")}
        for part in chunks(z.shape[0], 32):
            logits = self.model(self.labels.standardise(z[part]), self.positions.to(z.device),
                                self.queries.to(z.device))
            target = x_labels[part]
            out["correct"].append((logits.argmax(-1) == target).sum(1))
            out["cross_entropy"].append(F.cross_entropy(rearrange(logits, "b q k -> b k q"), target,
                                                        reduction="none").sum(1))
            out["count"].append(torch.full((target.shape[0],), target.shape[1]))
        return {key: torch.cat(v).double().cpu() for key, v in out.items()}
