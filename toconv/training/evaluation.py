"""Validation metrics of a compressor objective and the plots made from them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from toconv.data import EpochBatches
from toconv.metrics import RFStats, rf_cosines
from toconv.objective import CompressorObjective, reconstruction_loss
from toconv.training.data import TokenSource
from toconv.viz import plot_rf_heatmap
from toconv.viz.rf_examples import plot_rf_example


@dataclass
class Evaluation:
    """Validation results.

    Attributes:
        metrics: flat scalars (``val/...``) for logs and the summary.
        stats: per-RF statistics of the mean over validation images.
        per_image: (num_images, M) mean cosine of each RF in each image.
    """

    metrics: dict[str, float]
    stats: RFStats
    per_image: Tensor


@torch.no_grad()
def evaluate(objective: CompressorObjective, source: TokenSource, batch_size: int,
             device: torch.device, autocast: Callable[[], AbstractContextManager], seed: int = 0) -> Evaluation:
    """Reconstruction quality and the critic's Wasserstein estimate over a whole split.

    Uses its own seeded generator for the critic's real samples, so evaluating never moves the
    training random state.
    """
    was_training = objective.training
    objective.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    rf = objective.rf
    sums = {"reconstruction_loss": 0.0, "mse": 0.0, "cosine": 0.0, "wasserstein": 0.0}
    per_image, count = [], 0
    for tokens in source.batches(EpochBatches(len(source), batch_size, shuffle=False)):
        tokens = tokens.to(device)
        with autocast():
            pred, target = objective.reconstruct(tokens)
            real = objective.real_samples(tokens, generator)
            fake = objective.compressor(tokens)
            wasserstein = objective.critic(real).float().mean() - objective.critic(fake).float().mean()
        pred, target = pred.float(), target.float()
        rec = reconstruction_loss(pred, target, rf.mask)
        b = tokens.shape[0]
        for key, value in (("reconstruction_loss", rec.total), ("mse", rec.mse), ("cosine", rec.cosine),
                           ("wasserstein", wasserstein)):
            sums[key] += float(value) * b
        per_image.append(rf_cosines(pred, target, rf).cpu())
        count += b
    objective.train(was_training)
    per_image_rf = torch.cat(per_image)
    stats = RFStats.from_rf_cosines(per_image_rf, rf.conv.output_grid_size)
    metrics = {f"val/{key}": value / count for key, value in sums.items()}
    metrics["val/rf_cosine_mean"] = stats.mean_cosine
    metrics.update({f"val/buckets/{name}": float(n) for name, n in stats.buckets.items()})
    metrics.update({f"val/row_means/{i:02d}": float(v) for i, v in enumerate(stats.row_means)})
    metrics.update({f"val/col_means/{j:02d}": float(v) for j, v in enumerate(stats.col_means)})
    return Evaluation(metrics, stats, per_image_rf)


@torch.no_grad()
def plot_evaluation(objective: CompressorObjective, source: TokenSource, evaluation: Evaluation,
                    folder: Path, epoch: int, device: torch.device) -> dict[str, Path]:
    """``rf_heatmap_epoch_N.png`` and ``rf_{best,worst,median}_epoch_N_idx_X.png`` in ``folder``.

    Each RF example shows the validation image whose cosine at that RF is closest to the RF's
    mean over the split (a typical case, not an outlier).
    """
    stats, per_image = evaluation.stats, evaluation.per_image
    paths = {"heatmap": plot_rf_heatmap(stats, folder / f"rf_heatmap_epoch_{epoch}.png",
                                        title=f"RF reconstruction cosine, epoch {epoch} (validation)")}
    per_rf = per_image.mean(0)
    order = per_rf.argsort()
    picks = {"best": int(order[-1]), "worst": int(order[0]), "median": int(order[(len(order) - 1) // 2])}
    was_training = objective.training
    objective.eval()
    for label, m in picks.items():
        image = int((per_image[:, m] - per_rf[m]).abs().argmin())
        tokens = source.tokens([image]).to(device)
        pred, _ = objective.reconstruct(tokens)
        title = (f"{label} RF of epoch {epoch}: RF {m}, validation mean cosine {per_rf[m]:.3f} "
                 f"(shown: validation image {image}, cosine {per_image[image, m]:.3f})")
        paths[label] = plot_rf_example(tokens[0].float().cpu(), pred[0, m].float().cpu(), objective.rf,
                                       m, folder / f"rf_{label}_epoch_{epoch}_idx_{m}.png", title=title)
    objective.train(was_training)
    return paths
