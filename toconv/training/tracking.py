"""Experiment logs: TensorBoard always, Weights & Biases when enabled (main process only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def require_wandb() -> Any:
    """Import wandb or explain how to install it."""
    try:
        import wandb
    except ImportError as err:
        raise ModuleNotFoundError('experiment.use_wandb=true needs the wandb package: '
                                  'pip install "toconv[wandb]" (or set experiment.use_wandb=false)') from err
    return wandb


def require_tensorboard() -> None:
    """Fail early, with the package's name, when TensorBoard is not installed."""
    import tensorboard  # noqa: F401  (torch's SummaryWriter needs it)


class Tracker:
    """Scalars, histograms and images to ``run_dir/tensorboard`` and, optionally, W&B."""

    def __init__(self, run_dir: Path, config: dict[str, Any], use_wandb: bool = False,
                 wandb_project: str = "toconv", wandb_entity: str | None = None,
                 resume: bool = False) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.wandb = None
        if use_wandb:
            wandb = require_wandb()
            self.wandb = wandb.init(project=wandb_project, entity=wandb_entity, name=run_dir.name,
                                    dir=str(run_dir), config=config, id=run_dir.name,
                                    resume="allow" if resume else None)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def histogram(self, key: str, values: np.ndarray, step: int) -> None:
        """Log the finite ``values`` (TensorBoard refuses NaN and inf); nothing when none are."""
        values = values[np.isfinite(values)]
        if values.size == 0:
            logger.warning("%s: no finite values at step %d, histogram not logged", key, step)
            return
        self.writer.add_histogram(key, values, step)
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Histogram(values)}, step=step)

    def image(self, key: str, png: Path, step: int) -> None:
        """Log a PNG written to disk (HWC uint8)."""
        import matplotlib.image

        pixels = (matplotlib.image.imread(str(png))[..., :3] * 255).astype(np.uint8)
        self.writer.add_image(key, pixels, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Image(str(png))}, step=step)

    def close(self) -> None:
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
