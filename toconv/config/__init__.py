"""Training configuration: typed schema, presets and ``key.sub=value`` overrides (omegaconf)."""

from toconv.config.loading import (
    ConfigError,
    apply_overrides,
    default_config,
    load_config,
    save_config,
    validate,
)
from toconv.config.presets import PRESETS, list_presets
from toconv.config.schema import TrainConfig

__all__ = [
    "PRESETS",
    "ConfigError",
    "TrainConfig",
    "apply_overrides",
    "default_config",
    "list_presets",
    "load_config",
    "save_config",
    "validate",
]
