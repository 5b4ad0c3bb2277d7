"""The typed configuration tree of ``python -m toconv.train`` (omegaconf structured dataclasses).

The defaults here are the default training recipe (full run: CLIP-L/336, 24→12, RF design).
Loss weights default to :class:`~toconv.training.CompressorObjective`'s own defaults.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from toconv.training.objective import CompressorObjective

_OBJECTIVE_DEFAULTS = {name: p.default for name, p in
                       inspect.signature(CompressorObjective.__init__).parameters.items()}

#: Allowed values of the string choices, checked after every merge (key -> choices).
CHOICES: dict[str, tuple[str, ...]] = {
    "model.design": ("rf", "global"),
    "model.compressor.init": ("avg", "random", "pca"),
    "model.rf_autoencoder.kind": ("conv", "attention"),
    "hardware.device": ("auto", "cpu", "cuda"),
    "hardware.mixed_precision": ("fp32", "fp16", "bf16"),
}


@dataclass
class ExperimentConfig:
    name: str | None = None
    """Run folder name under ``output_dir``; default ``<encoder>-<design>-<in>to<out>-<time>``."""
    output_dir: str = "runs"
    use_wandb: bool = False
    wandb_project: str = "toconv"
    wandb_entity: str | None = None
    log_every_steps: int = 10


@dataclass
class EncoderConfig:
    name: str = "clip-l336"
    """Encoder preset (``clip-l336``, ``dinov2-s336``), local CLIP model folder or hub id."""
    dtype: str | None = None
    """Encoder compute dtype (float32, float16, bfloat16); null: float32 on CPU, float16 on GPU."""
    batch_size: int = 32
    """Images per encoder call when building the cache or encoding in the loop."""


@dataclass
class DataConfig:
    imagenet_root: str | None = None
    """ImageNet-layout folder (train/, val/ with class subfolders) or a plain folder of images."""
    use_subset: bool = False
    subset_size: int = 1000
    """Images per split kept when ``use_subset`` (deterministic, seeded)."""
    val_fraction: float = 0.2
    """Validation share of a plain folder (ImageNet layout uses its val/ folder)."""
    split_seed: int = 0
    use_cache: bool = True
    """Train from the feature cache (built on first use); false: the encoder runs in the loop."""
    cache_dir: str | None = None
    """Cache folder holding train/ and val/; default ``<cache_root>/<encoder>-<data digest>``."""
    cache_root: str = ".cache/features"
    num_workers: int = 0


@dataclass
class CompressorSection:
    input_grid_size: int = 24
    output_grid_size: int = 12
    init: str = "pca"
    """``pca`` (moment-matched PCA code of each RF, fitted on training tokens; see
    :func:`toconv.models.pca_init_`), ``avg`` (average pooling of each RF) or ``random``."""
    pca_images: int = 128
    """Training images the ``pca`` initialisation is fitted on."""


@dataclass
class AutoencoderConfig:
    """The decoder: RF decoder (``kind`` conv or attention) or, in the global design, GlobalDecoder."""

    kind: str = "conv"
    num_layers: int = 3
    hidden_dim: int | None = None
    """Width of the conv decoder's hidden layers; null: the token width."""
    num_heads: int = 8
    """Attention heads (attention RF decoder and global decoder)."""


@dataclass
class DiscriminatorConfig:
    """The WGAN critic: RFCritic (rf design) or GlobalCritic (global design)."""

    hidden_dim: int = 512
    depth: int = 3
    dropout: float = 0.0


@dataclass
class ModelConfig:
    design: str = "rf"
    """``rf``: per-RF critic and decoder; ``global``: set critic and whole-grid decoder."""
    compressor: CompressorSection = field(default_factory=CompressorSection)
    rf_autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    rf_discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


@dataclass
class LossWeights:
    ae: float = _OBJECTIVE_DEFAULTS["ae_weight"]
    wgan: float = _OBJECTIVE_DEFAULTS["wgan_weight"]


@dataclass
class WGANConfig:
    lambda_gp: float = _OBJECTIVE_DEFAULTS["lambda_gp"]


@dataclass
class LossConfig:
    weights: LossWeights = field(default_factory=LossWeights)
    rf_wgan: WGANConfig = field(default_factory=WGANConfig)


@dataclass
class TrainingConfig:
    epochs: int = 10
    batch_size: int = 32
    n_critic: int = 5
    lr_compressor: float = 3e-6
    """Learning rate of the compressor. Adam moves each of its k²C·C weights by about this much per
    step, so large rates push its tokens off the real-token distribution within tens of steps."""
    lr_decoder: float = 1e-3
    """Learning rate of the decoder (same Adam as the compressor, its own parameter group)."""
    lr_critic: float = 4e-4
    warmup_steps: int = 50
    """First compressor steps in which only the decoder (and the critic) learn."""
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    grad_clip: float | None = 1.0
    """Max gradient norm of the compressor+decoder step; null: no clipping."""
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many compressor steps in total (counting resumed ones); null: all epochs."""
    eval_every_epochs: int = 1
    save_every_steps: int = 200
    """Also save the resumable training state every this many steps (0: only per epoch)."""
    resume: str | None = None
    """``auto``: continue the run in ``experiment.name``'s folder if it has a saved state."""


@dataclass
class HardwareConfig:
    device: str = "auto"
    """``auto`` (GPU when available), ``cpu`` or ``cuda``."""
    cuda_device: int | None = None
    """GPU index for single-process runs; multi-GPU runs take theirs from ``accelerate launch``."""
    mixed_precision: str = "fp32"


@dataclass
class TrainConfig:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
