"""Token compression for Hugging Face LLaVA models: LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision.

The compressor sits inside the model's ``multi_modal_projector``: every image, NeXT/OneVision tile
and OneVision video frame passes through it as (tiles, [1+]N, C), is compressed to
(tiles, [1+]M, C) (a leading CLS token passes through) and then projected. While compressed, the
grid side that ``pack_image_features`` / ``apply_pooling`` read is the compressed one, and the
processor counts the compressed tokens (``patch_size`` for LLaVA and NeXT, ``num_image_tokens``
for OneVision), so ``forward``, ``generate``, gradients and saving work unchanged.

The image processor's backend (``pil`` or ``torchvision``) is recorded in the ``toconv`` config
field, and :func:`from_pretrained` loads that backend again: transformers 5 saves a backend-free
class name and loads the torchvision backend whenever torchvision is installed, whose pixels differ
from PIL's by about 1e-4.

transformers is imported lazily; supported versions: 4.49 and newer.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MethodType
from typing import Any

from torch import Tensor, nn

from toconv.integrations.towers import compress_patch_tokens, load_tower_compressor, tower_grid_side
from toconv.models import TokenCompressor, load_compressor

#: ``config.model_type`` -> (model class, processor class) in transformers.
MODEL_CLASSES: dict[str, tuple[str, str]] = {
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor"),
    "llava_next": ("LlavaNextForConditionalGeneration", "LlavaNextProcessor"),
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor"),
}
#: The compressor's file beside the stock model files.
COMPRESSOR_FILE = "toconv_compressor.safetensors"
#: The ``config.json`` field describing the compression.
CONFIG_FIELD = "toconv"
FORMAT_VERSION = 1
#: Model methods that read the grid side from the vision config (instance overrides while compressed).
_GRID_METHODS = ("pack_image_features", "apply_pooling")


@dataclass(frozen=True)
class LlavaLayout:
    """What the projector of a LLaVA model reads: ``grid`` x ``grid`` tokens of width ``width``.

    ``grid = image_size // patch_size`` (transformers' own rounding, so SigLIP 384/14 gives 27);
    ``width`` is the vision width times the number of ``vision_feature_layer`` entries.
    """

    model_type: str
    image_size: int
    patch_size: int
    grid: int
    vision_width: int
    num_layers: int
    select_strategy: str
    vision_model_type: str

    @property
    def width(self) -> int:
        return self.vision_width * self.num_layers


def llava_layout(model_or_config: Any) -> LlavaLayout:
    """The :class:`LlavaLayout` of a LLaVA model (or its config); ``ValueError`` for other models."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"expected a LLaVA model ({', '.join(c for c, _ in MODEL_CLASSES.values())}), "
                         f"got {type(model_or_config).__name__} with model_type={model_type!r}")
    vision = config.vision_config
    if vision.model_type == "pixtral":
        raise ValueError("a Pixtral vision tower gives a patch grid per image size, which a "
                         "square-grid compressor cannot express; use a CLIP or SigLIP tower")
    layers = config.vision_feature_layer
    return LlavaLayout(
        model_type=model_type,
        image_size=int(vision.image_size),
        patch_size=int(vision.patch_size),
        grid=tower_grid_side(int(vision.image_size), int(vision.patch_size)),
        vision_width=int(vision.hidden_size),
        num_layers=1 if isinstance(layers, int) else len(layers),
        select_strategy=config.vision_feature_select_strategy,
        vision_model_type=vision.model_type,
    )


class CompressedProjector(nn.Module):
    """``multi_modal_projector`` with a compressor in front.

    Shapes: (T, N, C) or (T, 1+N, C) → projector((T, M, C) or (T, 1+M, C)); N = the compressor's
    input grid squared; a leading CLS token (``vision_feature_select_strategy="full"`` with a CLIP
    tower) passes through. ``patch_size`` is the patch size that makes the vision config's
    ``image_size // patch_size`` the compressed grid side.
    """

    def __init__(self, compressor: TokenCompressor, projector: nn.Module, patch_size: int,
                 stock: dict[str, Any]) -> None:
        super().__init__()
        self.compressor = compressor
        self.projector = projector
        self.patch_size = patch_size
        self.stock = dict(stock)

    @property
    def output_grid_size(self) -> int:
        return self.compressor.geometry.output_grid_size

    def forward(self, features: Tensor) -> Tensor:
        """(T, [1+]N, C) → the projector's output for (T, [1+]M, C)."""
        n_in, n = self.compressor.geometry.num_inputs, features.shape[-2]
        if n not in (n_in, n_in + 1):
            side = self.compressor.geometry.input_grid_size
            raise ValueError(f"the compressor reads {n_in} patch tokens ({side}x{side}, plus an "
                             f"optional CLS token), but the projector received {n} tokens in shape "
                             f"{tuple(features.shape)} (a tower without CLS needs "
                             f"vision_feature_select_strategy='full')")
        weight = next(self.compressor.parameters())
        tokens = compress_patch_tokens(self.compressor, features.to(weight.device), n == n_in + 1)
        return self.projector(tokens)


def compress_llava(model: nn.Module, compressor: TokenCompressor | str | Path,
                   processor: Any = None, freeze: bool = True) -> nn.Module:
    """Compress the image tokens of a LLaVA / LLaVA-NeXT / LLaVA-OneVision model in place.

    ``compressor`` (or the path of a toconv checkpoint) maps the tower's grid (``image_size //
    patch_size``) of width vision width × len(``vision_feature_layer``) to a smaller grid; it keeps
    its dtype and moves to the projector's device. ``processor`` (if given) is changed in place to
    count the compressed tokens (one that already counts them, as loaded from a saved compressed
    folder, is left as it is), and its image processor's backend is recorded in the config field.
    ``freeze`` sets ``requires_grad=False`` on the compressor. Returns ``model``.

    Raises ``ValueError`` for a grid or width mismatch, a compressed side that ``image_size //
    patch_size`` cannot express, a model that is already compressed, or a processor that fits
    neither the stock nor the compressed model.
    """
    layout = llava_layout(model)
    owner = _owner(model)
    current = owner.multi_modal_projector
    if isinstance(current, CompressedProjector):
        raise ValueError(f"{type(model).__name__} is already compressed by {current.compressor!r}; "
                         f"compressing it again with {compressor!r} would compress twice: call "
                         f"remove_compression(model) first")
    if not isinstance(compressor, nn.Module):  # a checkpoint (any family): checked below
        compressor = load_compressor(compressor)
    _check_compressor(compressor, layout, type(model).__name__)
    n_out = compressor.geometry.output_grid_size
    sides = [layout.image_size] + (_processor_sides(processor) if processor is not None else [])
    patch_size = _compressed_patch_size(sides, n_out, layout)
    if processor is not None:
        _set_processor_grid(processor, layout, n_out, patch_size, compress=True)

    config = model.config
    stock = {"image_seq_length": getattr(config, "image_seq_length", None)}
    device = next(current.parameters()).device
    compressor = compressor.to(device).requires_grad_(not freeze)
    owner.multi_modal_projector = CompressedProjector(compressor, current, patch_size, stock)
    for name in _GRID_METHODS:
        if hasattr(type(owner), name):
            setattr(owner, name, MethodType(_GRID_OVERRIDES[name], owner))
    model.save_pretrained = MethodType(_save_compressed, model)
    if stock["image_seq_length"] is not None:
        config.image_seq_length = n_out**2
    setattr(config, CONFIG_FIELD, {"format_version": FORMAT_VERSION,
                                   "compressor": compressor.config.to_dict(),
                                   "weights": COMPRESSOR_FILE, "stock": stock})
    if processor is not None:
        _record_backend(model, processor)
    return model


def remove_compression(model: nn.Module, processor: Any = None) -> TokenCompressor:
    """Undo :func:`compress_llava` (the model and, if given, the processor); returns the compressor."""
    wrapper = compressed_projector(model)
    if wrapper is None:
        raise ValueError(f"{type(model).__name__} is not compressed (its multi_modal_projector is "
                         f"a {type(_owner(model).multi_modal_projector).__name__})")
    layout = llava_layout(model)
    if processor is not None:
        _set_processor_grid(processor, layout, wrapper.output_grid_size, wrapper.patch_size,
                            compress=False)
    owner = _owner(model)
    owner.multi_modal_projector = wrapper.projector
    for name in _GRID_METHODS:
        owner.__dict__.pop(name, None)
    model.__dict__.pop("save_pretrained", None)
    if wrapper.stock.get("image_seq_length") is not None:
        model.config.image_seq_length = wrapper.stock["image_seq_length"]
    if hasattr(model.config, CONFIG_FIELD):
        delattr(model.config, CONFIG_FIELD)
    return wrapper.compressor


def compressed_projector(model: nn.Module) -> CompressedProjector | None:
    """The model's :class:`CompressedProjector`, or None when it is not compressed."""
    projector = _owner(model).multi_modal_projector
    return projector if isinstance(projector, CompressedProjector) else None


def save_pretrained(model: nn.Module, out_dir: str | Path, processor: Any = None,
                    **kwargs: Any) -> Path:
    """Save a compressed model: stock model files, the processor and the compressor.

    ``out_dir`` receives what ``model.save_pretrained`` writes for the uncompressed model (the
    projector's weights under their stock names), ``config.json`` with a ``toconv`` field (the
    compressor's config and the processor's image backend), ``toconv_compressor.safetensors`` and
    the processor (which counts the compressed tokens). ``kwargs`` go to transformers'
    ``save_pretrained``. Returns ``out_dir``.
    """
    if compressed_projector(model) is None:
        raise ValueError(f"{type(model).__name__} is not compressed: save it with "
                         f"model.save_pretrained, or compress it with compress_llava first")
    out = Path(out_dir)
    if processor is not None:
        _record_backend(model, processor)
    model.save_pretrained(out, **kwargs)
    if processor is not None:
        processor.save_pretrained(out)
    return out


def from_pretrained(path: str | Path, freeze: bool = True, load_processor: bool = True,
                    processor_kwargs: dict | None = None, **kwargs: Any) -> tuple[nn.Module, Any]:
    """Load a folder (or hub id) written by :func:`save_pretrained`: ``(model, processor)``.

    The model is compressed again with the saved compressor (which keeps its saved dtype and sits
    on the projector's device). ``kwargs`` go to the model's ``from_pretrained`` (``torch_dtype``,
    ``device_map``, ...), ``processor_kwargs`` to ``AutoProcessor.from_pretrained``; with
    ``load_processor=False`` the processor is not loaded and ``None`` is returned in its place.
    The image processor comes back with the backend it was saved with (``pil`` or
    ``torchvision``) unless ``processor_kwargs`` names one (``backend`` or ``use_fast``); a
    torchvision one where torchvision is missing falls back to PIL with a warning.
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    info = getattr(config, CONFIG_FIELD, None)
    if config.model_type not in MODEL_CLASSES:
        raise ValueError(f"{path} holds a {config.model_type!r} model, expected one of "
                         f"{sorted(MODEL_CLASSES)}")
    if not isinstance(info, dict) or "compressor" not in info:
        raise ValueError(f"{path} has no {CONFIG_FIELD!r} field in its config.json: it was not "
                         f"written by toconv.integrations.hf.save_pretrained")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written with toconv format {info['format_version']}, this "
                         f"toconv reads format {FORMAT_VERSION} and older")
    model_class = getattr(transformers, MODEL_CLASSES[config.model_type][0])
    model = model_class.from_pretrained(path, **kwargs)
    processor_kwargs = processor_kwargs or {}
    processor = (transformers.AutoProcessor.from_pretrained(path, **processor_kwargs)
                 if load_processor else None)
    saved_backend = info.get("image_processor_backend")
    if processor is not None and saved_backend and not {"backend", "use_fast"} & set(processor_kwargs):
        processor.image_processor = _with_backend(processor.image_processor, path, saved_backend)
    layout = llava_layout(model)
    weights = _resolve_file(path, info.get("weights", COMPRESSOR_FILE))
    device = next(_owner(model).multi_modal_projector.parameters()).device
    compressor = load_tower_compressor(weights, layout.grid, info["compressor"]["output_grid_size"],
                                       layout.width, device=device)
    stock_length = info.get("stock", {}).get("image_seq_length")
    if stock_length is not None:  # the saved config holds the compressed length
        model.config.image_seq_length = stock_length
    delattr(model.config, CONFIG_FIELD)
    compress_llava(model, compressor, processor, freeze=freeze)
    if processor is None and saved_backend:  # kept for the next save
        getattr(model.config, CONFIG_FIELD)["image_processor_backend"] = saved_backend
    return model, processor


def image_processor_backend(image_processor: Any) -> str:
    """``torchvision`` for a torchvision-backed ("fast") image processor, else ``pil``."""
    try:  # transformers 5
        from transformers.image_processing_backends import TorchvisionBackend as Fast
    except ImportError:  # transformers 4.x
        from transformers.image_processing_utils_fast import BaseImageProcessorFast as Fast
    return "torchvision" if isinstance(image_processor, Fast) else "pil"


def load_image_processor(path: str | Path, config: Any = None) -> Any:
    """``AutoImageProcessor`` of a model folder (or hub id) with the backend that
    :func:`save_pretrained` recorded in its ``config`` (loaded from ``path`` when None); without a
    record, transformers' default (in transformers 5: torchvision whenever it is installed)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(path) if config is None else config
    info = getattr(config, CONFIG_FIELD, None)
    backend = info.get("image_processor_backend") if isinstance(info, dict) else None
    if backend is None:
        return transformers.AutoImageProcessor.from_pretrained(path)
    return _with_backend(None, path, backend)


# ----------------------------------------------------------------------------- internals
def _record_backend(model: nn.Module, processor: Any) -> None:
    """Write the backend of ``processor``'s image processor into the model's config field."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:
        getattr(model.config, CONFIG_FIELD)["image_processor_backend"] = (
            image_processor_backend(image_processor))


def _with_backend(image_processor: Any, path: str | Path, backend: str) -> Any:
    """``image_processor`` if it has ``backend``, else the folder's image processor loaded with it
    (transformers 5: ``backend=``; 4.x: ``use_fast=``); warns when that backend is unavailable."""
    import transformers

    if image_processor is not None and image_processor_backend(image_processor) == backend:
        return image_processor
    if backend not in ("pil", "torchvision"):
        raise ValueError(f"image processor backend: expected 'pil' or 'torchvision', got {backend!r}")
    if int(transformers.__version__.split(".")[0]) >= 5:
        choice: dict[str, Any] = {"backend": backend}
    else:
        choice = {"use_fast": backend == "torchvision"}
    loaded = transformers.AutoImageProcessor.from_pretrained(path, **choice)
    if image_processor_backend(loaded) != backend:
        warnings.warn(f"{path} was saved with a {backend} image processor, but this environment "
                      f"gives {type(loaded).__name__} ({image_processor_backend(loaded)}): pixel "
                      f"values can differ by about 1e-4 (install a torchvision that matches your "
                      f"torch to get the saved backend)", stacklevel=3)
    return loaded


def _owner(model: nn.Module) -> nn.Module:
    """The module holding ``multi_modal_projector`` (the model in 4.49, ``model.model`` in 5.x)."""
    for candidate in (model, getattr(model, "model", None)):
        if isinstance(candidate, nn.Module) and "multi_modal_projector" in candidate._modules:
            return candidate
    raise ValueError(f"{type(model).__name__} has no multi_modal_projector: expected a LLaVA, "
                     f"LLaVA-NeXT or LLaVA-OneVision model from transformers")


def _check_compressor(compressor: TokenCompressor, layout: LlavaLayout, model_name: str) -> None:
    cfg = compressor.config
    tower = (f"{model_name}'s vision tower ({layout.vision_model_type}, image_size="
             f"{layout.image_size}, patch_size={layout.patch_size})")
    if layout.select_strategy == "default" and layout.vision_model_type.startswith("siglip"):
        raise ValueError(f"{model_name} drops the first token (vision_feature_select_strategy="
                         f"'default'), but its {layout.vision_model_type} tower has no CLS token, so "
                         f"the projector reads {layout.grid**2 - 1} tokens, not the "
                         f"{layout.grid}x{layout.grid} grid the compressor needs")
    if cfg.cls_token:
        raise ValueError(f"the compressor was built with cls_token=True, but {model_name} passes "
                         f"its CLS token around the compressor itself: use cls_token=False")
    if cfg.input_grid_size != layout.grid:
        raise ValueError(f"the compressor reads a {cfg.input_grid_size}x{cfg.input_grid_size} "
                         f"patch grid, but {tower} gives {layout.grid}x{layout.grid}")
    widths = (f"vision width {layout.vision_width} x {layout.num_layers} feature layer(s) "
              f"(vision_feature_layer={layout.num_layers if layout.num_layers > 1 else 'int'})")
    if cfg.hidden_dim != layout.width:
        raise ValueError(f"the compressor reads tokens of width {cfg.hidden_dim}, but the projector "
                         f"of {model_name} reads width {layout.width} = {widths}")
    if cfg.output_dim != layout.width:
        raise ValueError(f"the compressor outputs width {cfg.output_dim}, but the projector of "
                         f"{model_name} reads width {layout.width} = {widths}")


def _compressed_patch_size(sides: list[int], n_out: int, layout: LlavaLayout) -> int:
    """The patch size p with ``side // p == n_out`` for every image side the model and processor
    divide by the patch size; ``ValueError`` when none exists."""
    sides = sorted(set(sides))
    patch = max(sides[0] // n_out, 1)
    if any(side // patch != n_out for side in sides):
        got = ", ".join(f"{side} // {patch} = {side // patch}" for side in sides)
        raise ValueError(f"a {n_out}x{n_out} output grid cannot be expressed by the patch "
                         f"arithmetic of {layout.model_type} (image side // patch size): {got}, "
                         f"not {n_out}; choose an output grid side n with side // (side // n) == n "
                         f"(the tower gives {layout.grid}x{layout.grid})")
    return patch


def _processor_sides(processor: Any) -> list[int]:
    """Image sides the processor divides by ``patch_size`` (its crop size, else its fixed size)."""
    image_processor = getattr(processor, "image_processor", None)
    for key in ("crop_size", "size"):
        size = getattr(image_processor, key, None)
        if key == "crop_size" and not getattr(image_processor, "do_center_crop", True):
            continue
        if isinstance(size, int):
            return [size]
        height = _get(size, "height")
        width = _get(size, "width")
        if height and width:
            return [int(height), int(width)]
    return []


def _get(size: Any, key: str) -> Any:
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _set_processor_grid(processor: Any, layout: LlavaLayout, n_out: int, patch_size: int,
                        compress: bool) -> None:
    """Make the processor count the compressed (``compress``) or the stock tokens.

    A processor already in the requested state is left alone; one in neither state raises.
    """
    import transformers

    expected = MODEL_CLASSES[layout.model_type][1]
    expected_class = getattr(transformers, expected, None)
    if expected_class is None or not isinstance(processor, expected_class):
        raise ValueError(f"a {layout.model_type} model needs a {expected}, got "
                         f"{type(processor).__name__}")
    if layout.model_type == "llava_onevision":
        attr, stock, compressed = "num_image_tokens", layout.grid**2, n_out**2
    else:
        attr, stock, compressed = "patch_size", layout.patch_size, patch_size
    current = getattr(processor, attr, None)
    target, other = (compressed, stock) if compress else (stock, compressed)
    if current == target:
        return
    if current != other:
        raise ValueError(
            f"the processor has {attr}={current}, but the model expects {attr}={stock} "
            f"(stock {layout.grid}x{layout.grid} grid) or {attr}={compressed} (compressed to "
            f"{n_out}x{n_out}); it was built for another model")
    setattr(processor, attr, target)


@contextmanager
def _compressed_side(owner: nn.Module) -> Iterator[None]:
    """While inside, ``vision_config.image_size // vision_config.patch_size`` is the compressed side.

    The vision config is shared with the saved config, so the change lasts only for the call (not
    thread-safe with a concurrent ``save_pretrained`` of the same model).
    """
    vision = owner.config.vision_config
    saved = vision.patch_size
    vision.patch_size = owner.multi_modal_projector.patch_size
    try:
        yield
    finally:
        vision.patch_size = saved


def _pack_image_features(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``pack_image_features`` on the compressed grid side."""
    with _compressed_side(self):
        return type(self).pack_image_features(self, *args, **kwargs)


def _apply_pooling(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """OneVision's video ``apply_pooling`` on the compressed grid side."""
    with _compressed_side(self):
        return type(self).apply_pooling(self, *args, **kwargs)


_GRID_OVERRIDES = {"pack_image_features": _pack_image_features, "apply_pooling": _apply_pooling}


def _save_compressed(self: nn.Module, save_directory: str | Path, *args: Any, **kwargs: Any) -> Any:
    """``save_pretrained`` of a compressed model: stock files, ``toconv`` config field, compressor.

    The projector is saved under its stock names (a stock transformers load reads it); an explicit
    ``state_dict`` (as trainers pass) is renamed the same way.
    """
    owner = _owner(self)
    wrapper = owner.multi_modal_projector
    if "state_dict" in kwargs and kwargs["state_dict"] is not None:
        kwargs["state_dict"] = _stock_state_dict(self, kwargs["state_dict"])
    owner.multi_modal_projector = wrapper.projector
    try:
        result = type(self).save_pretrained(self, save_directory, *args, **kwargs)
    finally:
        owner.multi_modal_projector = wrapper
    wrapper.compressor.save_pretrained(Path(save_directory) / COMPRESSOR_FILE)
    return result


def _stock_state_dict(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename ``...multi_modal_projector.projector.*`` to stock names and drop the compressor."""
    name = next(n for n, m in model.named_modules() if isinstance(m, CompressedProjector))
    inner, dropped = f"{name}.projector.", f"{name}.compressor."
    return {(f"{name}." + k[len(inner):] if k.startswith(inner) else k): v
            for k, v in state.items() if not k.startswith(dropped)}


def _resolve_file(path: str | Path, filename: str) -> Path:
    """``path/filename`` for a local folder, else the file from the hub (or its cache)."""
    local = Path(path) / filename
    if Path(path).is_dir():
        if not local.is_file():
            raise FileNotFoundError(f"{path} has a {CONFIG_FIELD!r} config field but no {filename}")
        return local
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(path), filename))


__all__ = [
    "COMPRESSOR_FILE",
    "CONFIG_FIELD",
    "CompressedProjector",
    "LlavaLayout",
    "compress_llava",
    "compressed_projector",
    "from_pretrained",
    "image_processor_backend",
    "llava_layout",
    "load_image_processor",
    "remove_compression",
    "save_pretrained",
]

