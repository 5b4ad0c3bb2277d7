"""The LLaVA model arguments / config fields that switch token compression on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

DEFAULT_S2_SCALES = "336,672,1008"


@dataclass
class CompressionArguments:
    """Extra LLaVA ``ModelArguments`` fields, also written into the model's ``config.json``.

    ``compression_checkpoint`` is a toconv safetensors checkpoint (file or folder) of any family;
    without one a freshly built tower starts as exact average pooling. ``compression_family``
    (``partial_conv`` or ``slots``) is the checkpoint's family, recorded in the model's config so
    that a saved model rebuilds the right compressor; None: the checkpoint's, else partial_conv. ``freeze_token_compressor`` keeps the
    compressor fixed (plug-in mode); otherwise it trains with the projector. ``s2`` and
    ``s2_scales`` select the multi-scale S2 tower (hidden size = CLIP width × number of scales).
    """

    use_token_compression: bool = False
    compression_input_size: int = 24
    compression_output_size: int = 12
    compression_checkpoint: str | None = None
    compression_family: str | None = None
    freeze_token_compressor: bool = False
    s2: bool = False
    s2_scales: str = DEFAULT_S2_SCALES

    @classmethod
    def from_config(cls, source: Any) -> CompressionArguments:
        """Read the fields from LLaVA model arguments or a model config; absent fields keep defaults."""
        return cls(**{f.name: getattr(source, f.name, f.default) for f in fields(cls)})

    def write_to(self, config: Any) -> None:
        """Set every field on ``config`` (a ``PretrainedConfig``), so ``config.json`` carries them."""
        for name, value in asdict(self).items():
            setattr(config, name, value)

    @property
    def scales(self) -> list[int]:
        """S2 image sizes, ascending."""
        try:
            return sorted(int(s) for s in self.s2_scales.split(","))
        except ValueError as err:
            raise ValueError(f"s2_scales must be comma-separated integers like "
                             f"{DEFAULT_S2_SCALES!r}, got {self.s2_scales!r}") from err
