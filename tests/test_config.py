"""Training configuration: schema defaults, the issue's overrides, presets and errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("omegaconf", reason="the trainer needs the train extra: pip install '.[train]'")
pytest.importorskip("tensorboard", reason="the trainer needs the train extra: pip install '.[train]'")

from omegaconf import OmegaConf

from toconv.config import (
    PRESETS,
    ConfigError,
    default_config,
    load_config,
    recipe_from_config,
    save_config,
)
from toconv.objective.designs import list_designs
from toconv.recipes import METHOD, RECIPES
from toconv.train import main, split_preset

ROOT = ["data.imagenet_root=some/images"]


def test_defaults_are_clip_l336_24to12_with_the_default_recipe():
    cfg = load_config(ROOT)
    assert cfg.encoder.name == "clip-l336" and cfg.recipe == "default"
    assert (cfg.model.compressor.input_grid_size, cfg.model.compressor.output_grid_size) == (24, 12)
    assert recipe_from_config(cfg) == RECIPES["default"]


def test_the_bench_and_the_quickstart_train_the_default_method():
    for name in ("default", "bench", "quickstart"):
        recipe = RECIPES[name]
        assert {key: getattr(recipe, key) for key in METHOD} == METHOD, name


@pytest.mark.parametrize(("name", "changed"), [
    ("bench-r1", {"adversarial_loss": "hinge", "lambda_gp": 0.0, "r1_weight": 1.0}),
    ("bench-critic-steps", {"n_critic": 10}),
    ("bench-critic-wide", {"critic": {"width": 1024, "depth": 3, "dropout": 0.0}}),
    ("bench-critic-heavy", {"wgan_weight": 0.1}),
    ("bench-center", {"pin_token": "center", "pin_pooling": 64}),
    ("bench-mean", {"pin_token": "mean", "pin_pooling": 64})])
def test_the_variants_change_only_their_own_fields_of_the_bench_recipe(name, changed):
    bench, variant = RECIPES["bench"].to_dict(), RECIPES[name].to_dict()
    assert {key: value for key, value in variant.items() if bench[key] != value} == changed


def test_adversarial_and_pinning_keys_reach_the_recipe():
    cfg = load_config(ROOT + ["loss.wgan.kind=hinge", "loss.wgan.r1_weight=2.0", "loss.wgan.lambda_gp=0",
                              "model.compressor.freeze_pinned=false", "model.compressor.pin_token=center"])
    recipe = recipe_from_config(cfg)
    assert (recipe.adversarial_loss, recipe.r1_weight, recipe.lambda_gp) == ("hinge", 2.0, 0.0)
    assert recipe.freeze_pinned is False and recipe.pin_token == "center"
    with pytest.raises(ConfigError, match="model.compressor.pin_token: expected one of mean, center, blend, got 'max'"):
        load_config(ROOT + ["model.compressor.pin_token=max"])
    with pytest.raises(ConfigError, match="loss.wgan.kind: expected one of wgan-gp, hinge, got 'lsgan'"):
        load_config(ROOT + ["loss.wgan.kind=lsgan"])


def test_the_pin_token_choices_are_the_starts_pin_tokens():
    from toconv.config.schema import CHOICES
    from toconv.models.pca_init import PIN_TOKENS

    assert CHOICES["model.compressor.pin_token"] == PIN_TOKENS


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_selects_every_method_key(name):
    cfg = load_config(ROOT + [f"recipe={name}"])
    assert cfg.recipe == name and recipe_from_config(cfg) == RECIPES[name]


def test_command_line_overrides_the_recipe_and_the_presets_recipe():
    cfg = load_config(ROOT + ["training.batch_size=3", "recipe=bench"])
    assert cfg.training.batch_size == 3 and cfg.training.max_steps == RECIPES["bench"].steps
    assert cfg.model.critic.width == RECIPES["bench"].critic.width
    cfg = load_config(["recipe=bench"], preset="quickstart")
    assert recipe_from_config(cfg) == RECIPES["bench"] and cfg.encoder.name == "dinov2-s336"
    with pytest.raises(ConfigError, match="recipe: unknown recipe 'fast'; expected one of bench"):
        load_config(ROOT + ["recipe=fast"])


@pytest.mark.parametrize(("old", "new"), [
    ("model.rf_autoencoder.hidden_dim=64", "model.decoder.width"),
    ("model.rf_autoencoder.kind=attention", "model.decoder.kind"),
    ("model.rf_discriminator.hidden_dim=64", "model.critic.width"),
    ("model.rf_discriminator.depth=2", "model.critic.depth"),
    ("loss.rf_wgan.lambda_gp=5.0", "loss.wgan.lambda_gp"),
])
def test_old_section_names_are_aliases(old, new):
    value = old.split("=")[1]
    cfg = load_config(ROOT + [old])
    assert str(OmegaConf.select(cfg, new)) == value


@pytest.mark.parametrize(("overrides", "expected"), [
    (["model.compressor.output_grid_size=8"], {"model.compressor.output_grid_size": 8}),
    (["model.compressor.input_grid_size=24"], {"model.compressor.input_grid_size": 24}),
    (["training.batch_size=16"], {"training.batch_size": 16}),
    (["training.epochs=5"], {"training.epochs": 5}),
    (["training.n_critic=10"], {"training.n_critic": 10}),
    (["loss.weights.ae=2.0"], {"loss.weights.ae": 2.0}),
    (["loss.weights.wgan=1.0"], {"loss.weights.wgan": 1.0}),
    (["loss.rf_wgan.lambda_gp=20.0"], {"loss.wgan.lambda_gp": 20.0}),
    (["model.rf_autoencoder.num_layers=5"], {"model.decoder.num_layers": 5}),
    (["model.rf_discriminator.dropout=0.2"], {"model.critic.dropout": 0.2}),
    (["data.use_subset=true", "data.subset_size=1000"], {"data.use_subset": True, "data.subset_size": 1000}),
    (["data.imagenet_root=/data/imagenet"], {"data.imagenet_root": "/data/imagenet"}),
    (["hardware.cuda_device=1"], {"hardware.cuda_device": 1}),
    (["experiment.use_wandb=true", "experiment.wandb_project=my-project"],
     {"experiment.use_wandb": True, "experiment.wandb_project": "my-project"}),
    (["model.design=global"], {"model.design": "global"}),
    (["training.betas=[0.0,0.99]", "training.resume=auto"], {"training.betas": [0.0, 0.99], "training.resume": "auto"}),
])
def test_issue_overrides_set_typed_values(overrides, expected):
    cfg = load_config(ROOT + overrides)
    for key, value in expected.items():
        got = OmegaConf.select(cfg, key)
        got = list(got) if OmegaConf.is_list(got) else got
        assert got == value and type(got) is type(value), key


@pytest.mark.parametrize(("override", "fragment"), [
    ("training.batch_sizee=16", "unknown key 'training.batch_sizee'"),
    ("modell.design=rf", "unknown key 'modell'"),
    ("training.batch_size=sixteen", "invalid value for 'training.batch_size'"),
    ("loss.weights.ae=high", "invalid value for 'loss.weights.ae'"),
    ("data.use_subset=maybe", "invalid value for 'data.use_subset'"),
    ("model.design=hybrid",
     f"model.design: expected one of {', '.join(list_designs())}, got 'hybrid'"),
    ("training.batch_size=0", "training.batch_size: expected an integer >= 1, got 0"),
    ("training.resume=yes", "training.resume: expected null or 'auto'"),
    ("training.epochs", "expected an override key.sub=value, got 'training.epochs'"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(ROOT + [override])
    assert fragment in str(info.value)


def test_missing_image_folder_is_a_config_error():
    with pytest.raises(ConfigError, match="data.imagenet_root: expected a folder"):
        load_config([])


def test_preset_then_command_line_wins():
    cfg = load_config(["training.epochs=1"], preset="quickstart")
    assert cfg.encoder.name == "dinov2-s336" and cfg.data.use_subset
    assert cfg.training.epochs == 1
    with pytest.raises(ConfigError, match="preset: expected one of quickstart, got 'nope'"):
        load_config(ROOT, preset="nope")


@pytest.mark.parametrize("argv", [["preset=quickstart", "a=1"], ["--preset", "quickstart", "a=1"],
                                  ["--preset=quickstart", "a=1"]])
def test_split_preset_forms(argv):
    assert split_preset(argv) == ("quickstart", ["a=1"])


def test_every_preset_override_is_valid():
    for name in PRESETS:
        load_config([], preset=name)


def test_quickstart_uses_the_packaged_photos_128_plus_32():
    from toconv.data import packaged_photos

    cfg = load_config([], preset="quickstart")
    assert cfg.data.imagenet_root == str(packaged_photos())
    assert (cfg.data.subset_size, cfg.data.val_size, cfg.training.plot_every_epochs) == (128, 32, 4)
    other = load_config(["data.imagenet_root=my/photos"], preset="quickstart")
    assert other.data.imagenet_root == "my/photos"


def test_quickstart_on_another_folder_gets_its_own_run_name(tmp_path):
    """The README's "another folder" command runs beside the quickstart's run folder."""
    assert load_config([], preset="quickstart").experiment.name == "quickstart"
    folder = tmp_path / "my photos"
    cfg = load_config([f"data.imagenet_root={folder}/"], preset="quickstart")
    assert cfg.experiment.name == "quickstart-my_photos"
    named = load_config([f"data.imagenet_root={folder}", "experiment.name=mine"], preset="quickstart")
    assert named.experiment.name == "mine"


def test_missing_packaged_photos_say_what_to_pass(monkeypatch, tmp_path):
    from toconv.data import photos

    monkeypatch.setattr(photos, "PHOTOS_DIR", tmp_path / "not-installed")
    with pytest.raises(ConfigError) as info:
        load_config([], preset="quickstart")
    message = str(info.value)
    assert message.startswith("data.imagenet_root: the packaged photos are not installed")
    assert "data.imagenet_root=FOLDER" in message and "\n" not in message
    load_config([f"data.imagenet_root={tmp_path}"], preset="quickstart")


@pytest.mark.parametrize(("override", "fragment"), [
    ("data.val_size=0", "data.val_size: expected null or an integer >= 1, got 0"),
    ("training.plot_every_epochs=0", "training.plot_every_epochs: expected an integer >= 1"),
    ("model.compressor.pin_pooling=-1", "model.compressor.pin_pooling: expected an integer >= 0"),
])
def test_new_keys_are_checked(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(ROOT + [override])


def test_saved_yaml_round_trips(tmp_path: Path):
    cfg = load_config(ROOT + ["model.design=global", "training.betas=[0.1,0.2]"])
    path = save_config(cfg, tmp_path / "config.yaml")
    assert OmegaConf.merge(default_config(), OmegaConf.load(path)) == cfg


@pytest.mark.parametrize(("override", "fragment"), [
    ("training.batch_sizee=3", "unknown key 'training.batch_sizee'"),
    ("training.batch_size=abc", "invalid value for 'training.batch_size'"),
])
def test_cli_exits_2_with_the_key_in_the_message(override, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(ROOT + [override])
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_cli_subprocess_exit_code_and_one_line_error():
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "toconv.train", "model.compressor.kernel=3"],
                         cwd=repo, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "unknown key 'model.compressor.kernel'" in out.stderr
    assert "Traceback" not in out.stderr
