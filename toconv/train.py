"""``python -m toconv.train [preset=NAME | --preset NAME] [recipe=NAME] key.sub=value ...``

Trains a compressor against a frozen vision encoder. Examples::

    python -m toconv.train preset=quickstart
    python -m toconv.train recipe=bench data.imagenet_root=photos/
    python -m toconv.train data.imagenet_root=/data/imagenet model.compressor.output_grid_size=8
    accelerate launch -m toconv.train data.imagenet_root=/data/imagenet training.batch_size=64

Exit status 2: a configuration error (unknown key, wrong type, invalid value); 1: the run could
not be set up (missing folder, package or model; not enough disk for the feature cache). Every
such error is one line on stderr, without a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from toconv.training.extras import missing_package_message

USAGE = __doc__.split("\n\n")[0].strip("`")
PROG = "python -m toconv.train"


def split_preset(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Take ``preset=NAME`` or ``--preset NAME`` / ``--preset=NAME`` out of the arguments."""
    from toconv.config import ConfigError

    preset, rest, args = None, [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--preset":
            if not args:
                raise ConfigError("--preset: expected a preset name after it")
            preset = args.pop(0)
        elif arg.startswith(("preset=", "--preset=")):
            preset = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return preset, rest


def main(argv: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Run training from command-line arguments; return the summary dict (empty off the main process)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        from omegaconf import OmegaConf

        from toconv.config import (
            PRESETS,
            ConfigError,
            default_config,
            describe_recipes,
            load_config,
        )
        from toconv.training.trainer import Trainer
    except ImportError as err:  # the train extra is not installed
        print(missing_package_message(err, PROG), file=sys.stderr)
        raise SystemExit(1) from None
    if any(arg in ("-h", "--help") for arg in argv):
        print(f"usage: {USAGE}\n\npresets: {', '.join(sorted(PRESETS))}\n\n"
              f"recipes (toconv/recipes.py):\n{describe_recipes()}\n\n"
              f"keys and defaults (the default recipe):\n{OmegaConf.to_yaml(default_config())}")
        raise SystemExit(0)
    try:
        preset, overrides = split_preset(argv)
        cfg = load_config(overrides, preset=preset)
    except ConfigError as err:
        print(f"{PROG}: configuration error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        trainer = Trainer(cfg, progress=progress)
    except ImportError as err:  # an optional package the chosen encoder or tracker needs
        print(missing_package_message(err, PROG), file=sys.stderr)
        raise SystemExit(1) from None
    except (OSError, ValueError) as err:  # missing files or model; bad data; no room for the cache
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    return trainer.fit()


if __name__ == "__main__":
    main()
