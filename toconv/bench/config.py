"""Benchmark settings. The ToConv training recipe lives in :class:`Recipe`, and only there."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """How ToConv (RF, global, reconstruction-only) and the other learned baselines are trained.

    ``wgan_weight`` is the adversarial weight of ToConv RF/global; the reconstruction-only variant
    uses the same recipe with ``wgan_weight=0``. ``init`` is the compressor initialisation.

    The compressor starts from the PCA code and moves slowly (``lr_compressor``): Adam moves every
    one of its k²C·C weights by about the learning rate per step, so 1e-4 leaves the real-token
    distribution within tens of steps (Fréchet in the hundreds on DINOv2-S tokens). The decoder and
    the critic learn fast and get ``warmup_steps`` with the compressor frozen first.
    """

    steps: int = 200
    batch_size: int = 8
    n_critic: int = 5
    lr_compressor: float = 3e-6
    lr_decoder: float = 1e-3
    lr_critic: float = 4e-4
    lr_baseline: float = 1e-4
    """Learning rate of the pixel-unshuffle + linear baseline (it starts as the window average)."""
    warmup_steps: int = 40
    """Steps at the start where only the decoder and the critic learn (the compressor is frozen)."""
    betas: tuple[float, float] = (0.5, 0.9)
    grad_clip: float = 1.0
    ae_weight: float = 1.0
    wgan_weight: float = 0.1
    lambda_gp: float = 10.0
    init: str = "pca"
    """``pca`` (:func:`toconv.models.pca_init_` on the train tokens), ``avg`` or ``random``."""
    critic_hidden_dim: int = 256
    critic_depth: int = 3
    decoder_layers: int = 2
    decoder_hidden_dim: int = 256
    global_decoder_layers: int = 1


@dataclass(frozen=True)
class ProbeSettings:
    """The measuring models: one RF decoder per method and the plug-in attention-pooling head."""

    decoder_layers: int = 2
    decoder_hidden_dim: int | None = None
    """None: the token width. A narrower probe is a bottleneck that favours codes whose information
    sits in few directions (pooling) over codes that use every channel (PCA)."""
    decoder_steps: int = 200
    decoder_batch_tokens: int = 256
    decoder_lr: float = 1e-3
    head_steps: int = 200
    head_batch_size: int = 32
    head_lr: float = 1e-3
    head_heads: int = 8
    frechet_samples_per_image: int = 36
    swd_projections: int = 256


@dataclass(frozen=True)
class BenchConfig:
    """Everything one benchmark run depends on (written to the report's JSON)."""

    output_sizes: tuple[int, ...] = (12, 8, 6)
    seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    max_train_images: int | None = None
    max_val_images: int | None = None
    timing_images: int = 16
    timing_repeats: int = 5
    encoder_timing_images: int = 4
    llm_image_tokens: tuple[int, ...] = (576, 144, 64, 36)
    llm_text_tokens: int = 32
    llm_repeats: int = 3
    gpu_batch_size: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def full_config(**overrides: Any) -> BenchConfig:
    """The full benchmark (about 25 min on a 2-core CPU)."""
    return replace(BenchConfig(), **overrides)


def quick_config(**overrides: Any) -> BenchConfig:
    """A few minutes: fewer steps and images, same methods and metrics."""
    base = BenchConfig(
        recipe=replace(Recipe(), steps=30, warmup_steps=10, n_critic=2),
        probe=replace(ProbeSettings(), decoder_steps=30, head_steps=100, swd_projections=64),
        max_train_images=160,
        max_val_images=64,
        timing_images=4,
        timing_repeats=2,
        encoder_timing_images=2,
        llm_repeats=1,
    )
    return replace(base, **overrides)
