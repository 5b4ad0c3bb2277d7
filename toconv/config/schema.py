"""The typed configuration tree of ``python -m toconv.train`` (omegaconf structured dataclasses).

The method's defaults are the ``default`` recipe of :mod:`toconv.recipes` (full run: CLIP-L/336,
24→12, RF design); ``recipe=NAME`` replaces them with another recipe's values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toconv.recipes import RECIPES

_RECIPE = RECIPES["default"]

#: Allowed values of the string choices, checked after every merge (key -> choices).
#: ``model.design`` is checked against the design registry.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.compressor.init": ("avg", "random", "pca", "kmeans"),
    "model.decoder.kind": ("conv", "attention"),
    "loss.wgan.kind": ("wgan-gp", "hinge"),
    "model.compressor.pin_token": ("mean", "center", "blend"),
    "hardware.device": ("auto", "cpu", "cuda"),
    "hardware.mixed_precision": ("fp32", "fp16", "bf16"),
}

#: Configuration key -> the :class:`~toconv.recipes.Recipe` field it holds (dotted for nested).
RECIPE_KEYS: dict[str, str] = {
    "model.design": "design",
    "model.compressor.init": "init",
    "model.compressor.pca_images": "pca_images",
    "model.compressor.pin_pooling": "pin_pooling",
    "model.compressor.pin_token": "pin_token",
    "model.compressor.freeze_pinned": "freeze_pinned",
    "model.critic.on_residual": "critic_on_residual",
    **{f"model.decoder.{k}": f"decoder.{k}" for k in ("kind", "num_layers", "width", "num_heads")},
    **{f"model.critic.{k}": f"critic.{k}" for k in ("width", "depth", "dropout")},
    "loss.weights.ae": "ae_weight",
    "loss.weights.wgan": "wgan_weight",
    "loss.wgan.kind": "adversarial_loss",
    "loss.wgan.lambda_gp": "lambda_gp",
    "loss.wgan.r1_weight": "r1_weight",
    **{f"training.{k}": k for k in ("batch_size", "n_critic", "lr_compressor", "lr_decoder",
                                    "lr_critic", "warmup_steps", "betas", "grad_clip")},
    "training.max_steps": "steps",
}

#: Section names of earlier releases, still accepted in overrides: old prefix -> new prefix.
ALIASES: dict[str, str] = {
    "model.rf_autoencoder.hidden_dim": "model.decoder.width",
    "model.rf_autoencoder.": "model.decoder.",
    "model.rf_discriminator.hidden_dim": "model.critic.width",
    "model.rf_discriminator.": "model.critic.",
    "loss.rf_wgan.": "loss.wgan.",
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
    """ImageNet-layout folder (train/, val/ with class subfolders) or a plain folder of images;
    ``${photos:}`` is the 160 photos shipped in the package (``toconv/photos``)."""
    use_subset: bool = False
    subset_size: int = 1000
    """Images per split kept when ``use_subset`` (deterministic, seeded)."""
    val_fraction: float = 0.2
    """Validation share of a plain folder, at least one image (ImageNet layout uses its val/)."""
    val_size: int | None = None
    """Validation images of a plain folder as a count (at most half of it); replaces val_fraction."""
    split_seed: int = 0
    use_cache: bool = True
    """Train from the feature cache (built on first use); false: the encoder runs in the loop."""
    cache_dir: str | None = None
    """Cache folder holding train/ and val/; default ``<cache_root>/<encoder>-<data digest>``."""
    cache_root: str = ".cache/features"
    num_workers: int = 0


@dataclass
class CompressorSection:
    family: str | None = None
    """A registered compressor family: ``partial_conv`` or ``slots`` (slot attention; trains with
    ``model.design=slots`` and ``init`` kmeans or random, as ``recipe=slots`` sets); null: the
    design's family (slots for the slots design, else partial_conv)."""
    input_grid_size: int = 24
    output_grid_size: int = 12
    init: str = _RECIPE.init
    """``pca`` (moment-matched PCA code of each RF, fitted on training tokens; see
    :func:`toconv.models.pca_init_`), ``avg`` (average pooling of each RF) or ``random``; for the
    slots family ``kmeans`` (slots start at k-means centroids, :func:`toconv.models.init_slots`)
    or ``random``."""
    pca_images: int = _RECIPE.pca_images
    """Training images the ``pca`` initialisation is fitted on."""
    pin_pooling: int = _RECIPE.pin_pooling
    """Top principal directions of real tokens in which the ``pca`` start keeps average pooling of
    the grid cell exactly (0: the plain PCA code; at least the token width: average pooling; see
    :func:`toconv.models.pca_init_`)."""
    pin_token: str = _RECIPE.pin_token
    """What the pinned directions hold: ``mean`` (the grid cell's average) or ``center`` (the
    window's centre token)."""
    freeze_pinned: bool = _RECIPE.freeze_pinned
    """With a pinned start, train only the residual code (the pinned part stays the start's)."""


@dataclass
class DecoderSection:
    """The decoder: an RF decoder (``kind`` conv or attention) or, in the global design, a
    whole-grid decoder. (Accepted under its old name ``model.rf_autoencoder``.)"""

    kind: str = _RECIPE.decoder.kind
    num_layers: int = _RECIPE.decoder.num_layers
    width: int | None = _RECIPE.decoder.width
    """Hidden width of the conv decoder; null: the token width."""
    num_heads: int = _RECIPE.decoder.num_heads
    """Attention heads (attention RF decoder and global decoder)."""


@dataclass
class CriticSection:
    """The WGAN critic, per token (rf) or per token set (global). (Accepted under its old name
    ``model.rf_discriminator``.)"""

    width: int = _RECIPE.critic.width
    depth: int = _RECIPE.critic.depth
    dropout: float = _RECIPE.critic.dropout
    on_residual: bool = _RECIPE.critic_on_residual
    """With a frozen pinned start, compare tokens without their pinned part."""


@dataclass
class ModelConfig:
    design: str = _RECIPE.design
    """A registered design: ``rf`` (per-RF critic and decoder) or ``global`` (set critic,
    whole-grid decoder)."""
    compressor: CompressorSection = field(default_factory=CompressorSection)
    decoder: DecoderSection = field(default_factory=DecoderSection)
    critic: CriticSection = field(default_factory=CriticSection)


@dataclass
class LossWeights:
    ae: float = _RECIPE.ae_weight
    wgan: float = _RECIPE.wgan_weight


@dataclass
class WGANConfig:
    """The adversarial loss. (Accepted under its old name ``loss.rf_wgan``.)"""

    kind: str = _RECIPE.adversarial_loss
    """The critic's loss: ``wgan-gp`` (Wasserstein) or ``hinge``."""
    lambda_gp: float = _RECIPE.lambda_gp
    """Gradient-penalty weight (0: none)."""
    r1_weight: float = _RECIPE.r1_weight
    """γ of the R1 penalty γ/2·E‖∇D(real)‖² on real tokens (0: none)."""


@dataclass
class LossConfig:
    weights: LossWeights = field(default_factory=LossWeights)
    wgan: WGANConfig = field(default_factory=WGANConfig)


@dataclass
class TrainingConfig:
    epochs: int = 10
    batch_size: int = _RECIPE.batch_size
    n_critic: int = _RECIPE.n_critic
    lr_compressor: float = _RECIPE.lr_compressor
    """Learning rate of the compressor. Adam moves each of its k²C·C weights by about this much per
    step, so large rates push its tokens off the real-token distribution within tens of steps."""
    lr_decoder: float = _RECIPE.lr_decoder
    """Learning rate of the decoder (same Adam as the compressor, its own parameter group)."""
    lr_critic: float = _RECIPE.lr_critic
    warmup_steps: int = _RECIPE.warmup_steps
    """First compressor steps in which only the decoder (and the critic) learn."""
    betas: list[float] = field(default_factory=lambda: list(_RECIPE.betas))
    grad_clip: float | None = _RECIPE.grad_clip
    """Max gradient norm of the compressor+decoder step; null: no clipping."""
    seed: int = 0
    max_steps: int | None = _RECIPE.steps
    """Stop after this many compressor steps in total (counting resumed ones); null: all epochs."""
    eval_every_epochs: int = 1
    plot_every_epochs: int = 5
    """Write the heatmap and RF example PNGs every this many epochs, and at the end."""
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
    recipe: str = "default"
    """The recipe (:mod:`toconv.recipes`) whose values the method's keys start from."""
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
