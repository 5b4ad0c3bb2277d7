"""Validation metrics of a compressor objective and the plots made from them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from toconv.data import EpochBatches
from toconv.encoders.base import resize_center_crop
from toconv.metrics import RFStats, rf_cosines
from toconv.objective import CompressorObjective, reconstruction_loss
from toconv.training.data import TokenSource
from toconv.viz import RFExample, plot_rf_examples, plot_rf_heatmap


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


def followed_rfs(output_grid_size: int) -> list[int]:
    """The RFs the example figures follow across evaluations: the top-left corner (clipped by the
    padding where there is one), the middle of the top edge and the centre."""
    middle = output_grid_size // 2
    return [0, middle, middle * output_grid_size + middle]


@torch.no_grad()
def plot_evaluation(objective: CompressorObjective, source: TokenSource, evaluation: Evaluation,
                    folder: Path, label: str, device: torch.device, image: int = 0) -> dict[str, Path]:
    """``rf_heatmap_epoch_<label>.png`` and ``rf_examples_epoch_<label>.png`` in ``folder``.

    The example figure shows the same RFs (:func:`followed_rfs`) of the same validation image
    (index ``image``) at every evaluation, with its photo and file name, so figures of successive
    epochs compare directly.
    """
    stats, per_image = evaluation.stats, evaluation.per_image
    paths = {"heatmap": plot_rf_heatmap(stats, folder / f"rf_heatmap_epoch_{label}.png",
                                        title=f"RF reconstruction cosine, epoch {label} (validation)")}
    per_rf = per_image.mean(0)
    was_training = objective.training
    objective.eval()
    tokens = source.tokens([image]).to(device)
    pred, _ = objective.reconstruct(tokens)
    objective.train(was_training)
    examples = [RFExample(m, pred[0, m].float().cpu(), float(per_image[image, m]), float(per_rf[m]))
                for m in followed_rfs(objective.rf.conv.output_grid_size)]
    path = source.image_path(image)
    photo = None
    if path is not None and path.is_file():
        with Image.open(path) as opened:
            photo = resize_center_crop(opened, source.image_size)
    name = path.name if path is not None else f"validation image {image}"
    paths["rf_examples"] = plot_rf_examples(
        tokens[0].float().cpu(), examples, objective.rf, folder / f"rf_examples_epoch_{label}.png",
        photo=photo, photo_name=name,
        title=f"RFs followed across epochs: epoch {label}, validation image {image} ({name})")
    return paths
