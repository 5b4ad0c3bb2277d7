"""Build the training configuration: schema, recipe, preset, then ``key.sub=value`` overrides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf import __version__ as omegaconf_version
from omegaconf.errors import OmegaConfBaseException

from toconv.config.presets import PRESETS
from toconv.config.schema import ALIASES, CHOICES, RECIPE_KEYS, TrainConfig
from toconv.data import photos
from toconv.recipes import Recipe, get_recipe, list_recipes

# ``${photos:}``: the photos shipped inside the package (the quickstart's image folder).
# omegaconf 2.4 renamed register_new_resolver to register_resolver (2.3's register_resolver is
# the old string-only API); LLaVA's environment has 2.3.
_register = (OmegaConf.register_resolver if tuple(map(int, omegaconf_version.split(".")[:2])) >= (2, 4)
             else OmegaConf.register_new_resolver)
_register("photos", lambda: str(photos.packaged_photos()), replace=True)


def run_name(prefix: str, _root_: DictConfig) -> str:
    """``${run_name:PREFIX}``: ``PREFIX`` on the packaged photos (or when ``data.imagenet_root``
    cannot be resolved: its own error follows), else ``PREFIX-<folder name>``, so a preset run on
    another folder gets its own run folder."""
    root = OmegaConf.select(_root_, "data.imagenet_root", throw_on_resolution_failure=False)
    if root is None or Path(root).expanduser().resolve() == photos.PHOTOS_DIR.resolve():
        return prefix
    folder = Path(root).expanduser().resolve().name
    return f"{prefix}-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in folder)


_register("run_name", run_name, replace=True)


class ConfigError(ValueError):
    """A configuration problem found before training starts; the message names the key."""


def default_config() -> DictConfig:
    """The schema with its defaults (the ``default`` recipe), as a typed (structured) DictConfig."""
    return OmegaConf.structured(TrainConfig)


def canonical_key(key: str) -> str:
    """The current name of a configuration key (old section names are aliases, see ``ALIASES``)."""
    for old, new in ALIASES.items():
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old):]
    return key


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], source: str = "command line") -> DictConfig:
    """Merge ``key.sub=value`` overrides one by one into the typed ``cfg``.

    Raises:
        ConfigError: an override without ``=``, an unknown key or a value of the wrong type.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: expected an override key.sub=value, got {item!r}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{canonical_key(key)}={value}"]))
        except OmegaConfBaseException as err:
            raise ConfigError(f"{source}: override {item!r}: {_reason(err, key)}") from None
    return cfg


def _reason(err: OmegaConfBaseException, key: str) -> str:
    """One line from an omegaconf error: what was wrong with which key."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    full_key = getattr(err, "full_key", None) or key
    kind = "unknown key" if type(err).__name__ == "ConfigKeyError" else "invalid value for"
    return f"{kind} {full_key!r} ({message})"


def _recipe_value(recipe: Recipe, field: str) -> Any:
    value: Any = recipe
    for part in field.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, tuple) else value


def apply_recipe(cfg: DictConfig, name: str) -> DictConfig:
    """Set every method key (``RECIPE_KEYS``) to recipe ``name``'s value."""
    try:
        recipe = get_recipe(name)
    except ValueError as err:
        raise ConfigError(f"recipe: {err}") from None
    values = OmegaConf.create({"recipe": name})
    for key, field in RECIPE_KEYS.items():
        OmegaConf.update(values, key, _recipe_value(recipe, field))
    return OmegaConf.merge(cfg, values)


def recipe_from_config(cfg: DictConfig) -> Recipe:
    """The :class:`~toconv.recipes.Recipe` the configuration's method keys describe."""
    changes = {field: OmegaConf.select(cfg, key) for key, field in RECIPE_KEYS.items()}
    changes["betas"] = tuple(changes["betas"])
    return Recipe().changed(**changes)


def validate(cfg: DictConfig) -> None:
    """Check choices and ranges the types alone cannot express; raise ConfigError naming the key."""
    from toconv.objective.designs import list_designs

    for key, choices in {**CHOICES, "model.design": tuple(list_designs())}.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
    positive = ["training.batch_size", "training.n_critic", "training.eval_every_epochs",
                "encoder.batch_size", "experiment.log_every_steps", "model.decoder.num_layers",
                "model.critic.depth", "model.compressor.input_grid_size",
                "model.compressor.output_grid_size", "model.compressor.pca_images", "data.subset_size",
                "training.plot_every_epochs"]
    for key in positive:
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key}: expected an integer >= 1, got {OmegaConf.select(cfg, key)}")
    _validate_family(cfg)
    if cfg.model.compressor.pin_pooling < 0:
        raise ConfigError(f"model.compressor.pin_pooling: expected an integer >= 0, got "
                          f"{cfg.model.compressor.pin_pooling}")
    t = cfg.training
    if t.epochs < 1 and t.max_steps is None:
        raise ConfigError(f"training.epochs: expected >= 1 (or set training.max_steps), got {t.epochs}")
    if t.max_steps is not None and t.max_steps < 1:
        raise ConfigError(f"training.max_steps: expected null or >= 1, got {t.max_steps}")
    if len(t.betas) != 2 or not all(0.0 <= b < 1.0 for b in t.betas):
        raise ConfigError(f"training.betas: expected two values in [0, 1), got {list(t.betas)}")
    if t.resume not in (None, "auto"):
        raise ConfigError(f"training.resume: expected null or 'auto', got {t.resume!r}")
    if not 0.0 <= cfg.model.critic.dropout < 1.0:
        raise ConfigError(f"model.critic.dropout: expected a value in [0, 1), got {cfg.model.critic.dropout}")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: expected a value in (0, 1), got {cfg.data.val_fraction}")
    if cfg.data.val_size is not None and cfg.data.val_size < 1:
        raise ConfigError(f"data.val_size: expected null or an integer >= 1, got {cfg.data.val_size}")
    if cfg.data.imagenet_root is None:
        raise ConfigError("data.imagenet_root: expected a folder of images (ImageNet layout or plain), "
                          "got nothing; pass data.imagenet_root=PATH")


def _validate_family(cfg: DictConfig) -> None:
    """The compressor family exists, and the slots family goes with its design and starts."""
    from toconv.models import list_families

    c = cfg.model.compressor
    if c.family not in list_families():
        raise ConfigError(f"model.compressor.family: expected one of {', '.join(list_families())}, "
                          f"got {c.family!r}")
    slots = c.family == "slots"
    if slots != (cfg.model.design == "slots"):
        raise ConfigError(f"model.design: the slots design trains the slots family and only it; got "
                          f"design {cfg.model.design!r} with family {c.family!r} (for slots: "
                          f"recipe=slots)")
    starts = ("kmeans", "random") if slots else ("avg", "random", "pca")
    if c.init not in starts:
        raise ConfigError(f"model.compressor.init: the {c.family} family starts from one of "
                          f"{', '.join(starts)}, got {c.init!r}")


def _split_recipe(items: Sequence[str]) -> tuple[str | None, list[str]]:
    """Take ``recipe=NAME`` out of a list of overrides (the last one wins)."""
    recipe, rest = None, []
    for item in items:
        if item.startswith("recipe="):
            recipe = item.split("=", 1)[1]
        else:
            rest.append(item)
    return recipe, rest


def load_config(overrides: Sequence[str] = (), preset: str | None = None) -> DictConfig:
    """Schema defaults, then the recipe (``recipe=NAME`` on the command line, else the preset's),
    then the preset's other overrides, then ``overrides``; validated.

    Raises:
        ConfigError: unknown preset or recipe, bad override or invalid value (names the key).
    """
    cfg = default_config()
    preset_items: list[str] = []
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"preset: expected one of {', '.join(sorted(PRESETS))}, got {preset!r}")
        preset_items = PRESETS[preset]
    preset_recipe, preset_items = _split_recipe(preset_items)
    recipe, overrides = _split_recipe(overrides)
    if recipe or preset_recipe:
        cfg = apply_recipe(cfg, recipe or preset_recipe)
    cfg = apply_overrides(cfg, preset_items, source=f"preset {preset!r}")
    cfg = apply_overrides(cfg, overrides)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        cause: BaseException = err
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        raise ConfigError(f"{getattr(err, 'full_key', None) or 'interpolation'}: {cause}") from None
    if cfg.model.compressor.family is None:
        cfg.model.compressor.family = "slots" if cfg.model.design == "slots" else "partial_conv"
    validate(cfg)
    return cfg


def describe_recipes() -> str:
    """One line per recipe: its name and values (for ``--help``)."""
    return "\n".join(f"  {name}: {asdict(get_recipe(name))}" for name in list_recipes())


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Write the resolved configuration as YAML."""
    path = Path(path)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path
