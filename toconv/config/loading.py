"""Build the training configuration from the schema, a preset and ``key.sub=value`` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from toconv.config.presets import PRESETS
from toconv.config.schema import CHOICES, TrainConfig


class ConfigError(ValueError):
    """A configuration problem found before training starts; the message names the key."""


def default_config() -> DictConfig:
    """The schema with its defaults, as a typed (structured) DictConfig."""
    return OmegaConf.structured(TrainConfig)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], source: str = "command line") -> DictConfig:
    """Merge ``key.sub=value`` overrides one by one into the typed ``cfg``.

    Raises:
        ConfigError: an override without ``=``, an unknown key or a value of the wrong type.
    """
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: expected an override key.sub=value, got {item!r}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise ConfigError(f"{source}: override {item!r}: {_reason(err, key)}") from None
    return cfg


def _reason(err: OmegaConfBaseException, key: str) -> str:
    """One line from an omegaconf error: what was wrong with which key."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    full_key = getattr(err, "full_key", None) or key
    kind = "unknown key" if type(err).__name__ == "ConfigKeyError" else "invalid value for"
    return f"{kind} {full_key!r} ({message})"


def validate(cfg: DictConfig) -> None:
    """Check choices and ranges the types alone cannot express; raise ConfigError naming the key."""
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
    positive = ["training.batch_size", "training.n_critic", "training.eval_every_epochs",
                "encoder.batch_size", "experiment.log_every_steps", "model.rf_autoencoder.num_layers",
                "model.rf_discriminator.depth", "model.compressor.input_grid_size",
                "model.compressor.output_grid_size", "model.compressor.pca_images", "data.subset_size"]
    for key in positive:
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key}: expected an integer >= 1, got {OmegaConf.select(cfg, key)}")
    t = cfg.training
    if t.epochs < 1 and t.max_steps is None:
        raise ConfigError(f"training.epochs: expected >= 1 (or set training.max_steps), got {t.epochs}")
    if t.max_steps is not None and t.max_steps < 1:
        raise ConfigError(f"training.max_steps: expected null or >= 1, got {t.max_steps}")
    if len(t.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.betas):
        raise ConfigError(f"training.betas: expected two values in [0, 1), got {list(t.betas)}")
    if t.resume not in (None, "auto"):
        raise ConfigError(f"training.resume: expected null or 'auto', got {t.resume!r}")
    if not 0.0 <= cfg.model.rf_discriminator.dropout < 1.0:
        raise ConfigError(f"model.rf_discriminator.dropout: expected a value in [0, 1), got "
                          f"{cfg.model.rf_discriminator.dropout}")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: expected a value in (0, 1), got {cfg.data.val_fraction}")
    if cfg.data.imagenet_root is None:
        raise ConfigError("data.imagenet_root: expected a folder of images (ImageNet layout or plain), "
                          "got nothing; pass data.imagenet_root=PATH")


def load_config(overrides: Sequence[str] = (), preset: str | None = None) -> DictConfig:
    """Schema defaults, then the preset's overrides, then ``overrides``; validated.

    Raises:
        ConfigError: unknown preset, bad override or invalid value (the message names the key).
    """
    cfg = default_config()
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"preset: expected one of {', '.join(sorted(PRESETS))}, got {preset!r}")
        cfg = apply_overrides(cfg, PRESETS[preset], source=f"preset {preset!r}")
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Write the resolved configuration as YAML."""
    path = Path(path)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path
