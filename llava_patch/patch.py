"""``apply()``: switch LLaVA's tower builder, vision-module setup and training script to compression."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from llava_patch.config import CompressionArguments

#: ``mm_projector.bin`` → ``mm_projector.token_compressor.safetensors`` in the same folder.
COMPANION_SUFFIX = ".token_compressor.safetensors"

_state: dict[str, Any] = {}


def companion_path(adapter: str | Path) -> Path:
    """Where the compressor is saved beside a LLaVA projector file (``*.bin``)."""
    adapter = Path(adapter)
    return adapter.with_name(adapter.stem + COMPANION_SUFFIX)


def is_applied() -> bool:
    return bool(_state)


def apply() -> None:
    """Patch the installed LLaVA (idempotent).

    * ``build_vision_tower`` in ``llava.model.multimodal_encoder.builder`` and in
      ``llava.model.llava_arch`` (which imported it by name) builds a compressed tower when the
      config/arguments set ``use_token_compression``; otherwise it is LLaVA's own builder.
    * ``LlavaMetaModel.initialize_vision_modules`` writes the compression fields into the model
      config and restores the compressor saved beside ``pretrain_mm_mlp_adapter``.
    * ``llava.train.train``: ``ModelArguments`` gains the compression flags, the trainer keeps the
      compressor trainable (or frozen) and saves it beside ``mm_projector.bin``, and saving the
      adapter needs deepspeed only under ZeRO-3.
    """
    if _state:
        return
    from llava.model import llava_arch
    from llava.model.multimodal_encoder import builder

    original_build = builder.build_vision_tower
    build = functools.partial(build_vision_tower, original_build)
    builder.build_vision_tower = llava_arch.build_vision_tower = build
    meta = llava_arch.LlavaMetaModel
    meta.initialize_vision_modules = _wrap_initialize(meta.initialize_vision_modules)
    _patch_training()
    _state.update(original_build=original_build)


def build_vision_tower(original: Callable[..., nn.Module], vision_tower_cfg: Any,
                       **kwargs: Any) -> nn.Module:
    """LLaVA's builder when compression is off; a compressed CLIP (or S2) tower when it is on."""
    settings = CompressionArguments.from_config(vision_tower_cfg)
    if not settings.use_token_compression:
        return original(vision_tower_cfg, **kwargs)
    from llava_patch.towers import compressed_tower_class

    name = getattr(vision_tower_cfg, "mm_vision_tower", getattr(vision_tower_cfg, "vision_tower", None))
    if name is None:
        raise ValueError("use_token_compression needs a vision tower: expected `mm_vision_tower` or "
                         "`vision_tower` in the config, got neither")
    return compressed_tower_class(settings)(name, args=vision_tower_cfg, **kwargs)


def compressed_tower(model: nn.Module) -> nn.Module | None:
    """The compressed tower of a LLaVA model (or its inner model), else None."""
    from llava_patch.towers import CompressedTowerMixin

    inner = model.get_model() if hasattr(model, "get_model") else model
    tower = inner.get_vision_tower() if hasattr(inner, "get_vision_tower") else None
    return tower if isinstance(tower, CompressedTowerMixin) else None


def _wrap_initialize(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def initialize_vision_modules(self: nn.Module, model_args: Any, fsdp: Any = None) -> None:
        original(self, model_args, fsdp=fsdp)
        settings = CompressionArguments.from_config(model_args)
        if not settings.use_token_compression:
            return
        adapter = getattr(model_args, "pretrain_mm_mlp_adapter", None)
        if adapter and companion_path(adapter).is_file():
            settings.compression_checkpoint = str(companion_path(adapter).resolve())
            self.get_vision_tower().load_compressor(settings.compression_checkpoint)
        settings.compression_family = self.get_vision_tower().token_compressor.family
        settings.write_to(self.config)

    return initialize_vision_modules


def _patch_training() -> None:
    from llava.train import llava_trainer
    from llava.train import train as train_module

    train_module.ModelArguments = _extend_arguments(train_module.ModelArguments)
    train_module.LLaVATrainer = _trainer_class(train_module.LLaVATrainer)
    train_module.safe_save_model_for_hf_trainer = _wrap_final_save(
        train_module.safe_save_model_for_hf_trainer)
    for module in (train_module, llava_trainer):
        module.maybe_zero_3 = _gather_without_deepspeed(module.maybe_zero_3)


def _extend_arguments(base: type) -> type:
    @dataclass
    class ModelArguments(base, CompressionArguments):
        """LLaVA's model arguments plus the token-compression flags."""

    return ModelArguments


def _gather_without_deepspeed(original: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Only ZeRO-3 partitioned parameters (with ``ds_id``) need deepspeed to be gathered."""

    @functools.wraps(original)
    def maybe_zero_3(param: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if hasattr(param, "ds_id"):
            return original(param, *args, **kwargs)
        return param.detach().cpu().clone()

    return maybe_zero_3


def _trainer_class(base: type) -> type:
    class TokenCompressionTrainer(base):
        """LLaVA's trainer; the compressor trains (fp32 master weights) unless frozen and is
        saved beside ``mm_projector.bin`` in adapter checkpoints."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            tower = compressed_tower(self.model)
            if tower is not None:
                trainable = not tower.compression.freeze_token_compressor
                if trainable:
                    tower.token_compressor.float()
                tower.token_compressor.requires_grad_(trainable)

        def _save_checkpoint(self, model: nn.Module, trial: Any, metrics: Any = None) -> None:
            tower = compressed_tower(self.model)
            if tower is None or not getattr(self.args, "tune_mm_mlp_adapter", False):
                return super()._save_checkpoint(model, trial, metrics)
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            out = Path(self._get_output_dir(trial=trial)) / folder
            file = companion_path(out / "mm_projector.bin").resolve()
            config = self.model.config
            previous, config.compression_checkpoint = config.compression_checkpoint, str(file)
            try:  # the checkpoint's config.json points at its own compressor
                super()._save_checkpoint(model, trial, metrics)
            finally:
                config.compression_checkpoint = previous
            if self.args.local_rank in (0, -1):
                tower.save_compressor(file)

    return TokenCompressionTrainer


def _adapter_file(output_dir: str) -> Path:
    """Where LLaVA's final save writes the projector for ``output_dir``."""
    out = Path(output_dir)
    if out.name.startswith("checkpoint-"):
        return out.parent / "mm_projector" / f"{out.name}.bin"
    return out / "mm_projector.bin"


def _wrap_final_save(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def safe_save_model_for_hf_trainer(trainer: Any, output_dir: str) -> None:
        tower = compressed_tower(trainer.model)
        if tower is None or not getattr(trainer.args, "tune_mm_mlp_adapter", False):
            return original(trainer=trainer, output_dir=output_dir)
        file = companion_path(_adapter_file(output_dir)).resolve()
        # config.json points at the saved compressor, so the adapter folder reloads on its own
        trainer.model.config.compression_checkpoint = str(file)
        original(trainer=trainer, output_dir=output_dir)
        if trainer.args.local_rank in (0, -1):
            os.makedirs(file.parent, exist_ok=True)
            tower.save_compressor(file)

    return safe_save_model_for_hf_trainer
