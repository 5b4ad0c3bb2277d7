"""Training configuration: typed schema, presets and ``key.sub=value`` overrides (omegaconf)."""

from toconv.config.loading import (
    ConfigError,
    apply_overrides,
    apply_recipe,
    canonical_key,
    default_config,
    describe_recipes,
    load_config,
    recipe_from_config,
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
    "apply_recipe",
    "canonical_key",
    "default_config",
    "describe_recipes",
    "list_presets",
    "load_config",
    "recipe_from_config",
    "save_config",
    "validate",
]
