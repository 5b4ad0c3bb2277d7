"""Benchmark settings. The learned rows train with named recipes (:mod:`toconv.recipes`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from toconv.metrics import ProbeSettings

QUICK_METHODS = ("avg-pool", "keep-center", "toconv-init", "toconv-rf", "control-rotated",
                 "control-shuffled")
"""The rows every verdict needs: pooling, keep-center, the method's start and its trained row, and
both controls; ``--quick`` runs these."""
DEFAULT_METHODS = (*QUICK_METHODS[:2], "blend-pool", "mode-pool", *QUICK_METHODS[2:])
"""The full run adds ``blend-pool``: what the default start pins, in every direction, so the
residual code is judged against the token it sits beside; and ``mode-pool``, each cell's dominant
content, which shows how far the frozen readers favour a mode over a mean. ``bilinear``, ``tome``,
``toconv-recon``, ``toconv-global``, ``unshuffle-linear`` and the other registered rows run with
``--methods``; every row costs a trained reader per run."""


@dataclass(frozen=True)
class BenchConfig:
    """Everything one benchmark run depends on (written to the report's JSON).

    ``recipe_changes`` is applied to every learned row's recipe (dotted names for nested fields,
    e.g. ``{"steps": 30}``); the rows' recipes themselves are named in the method registry.
    """

    output_grid_sizes: tuple[int, ...] = (12, 8, 6)
    seed: int = 0
    num_seeds: int = 3
    """Runs k = 0, 1, …: training seed ``seed + k`` for seeded methods (trained, fitted or drawn
    at random) and instrument seed ``seed + k`` (k-means, frozen readers, trained readers,
    Fréchet's real samples), every instrument refitted at each."""
    bootstrap_draws: int = 10
    """Validation images resampled with replacement this many times in every run; a method's
    figure has one value per (run, draw), in the same order for every method."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Registered methods (:mod:`toconv.bench.methods`) in table order."""
    quick: bool = False
    workers: int | None = None
    """Processes the independent jobs (instrument seeds, then each run at each size) are spread
    over (:mod:`toconv.bench.workers`); None: one per available core, at most one per job. Every
    job is seeded on its own, so the figures do not depend on it."""
    recipe_changes: dict[str, Any] = field(default_factory=dict)
    unshuffle_lr: float = 1e-4
    """Learning rate of the pixel-unshuffle + linear baseline (it starts as the window average)."""
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    max_train_images: int | None = None
    max_val_images: int | None = None
    timing_images: int = 16
    timing_repeats: int = 5
    encoder_timing_images: int = 4
    llm_text_tokens: int = 32
    llm_repeats: int = 3
    gpu_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers: expected at least 1 worker process, got {self.workers}")
        if self.num_seeds < 1:
            raise ValueError(f"num_seeds: expected at least 1 seed, got {self.num_seeds}")
        if self.bootstrap_draws < 1:
            raise ValueError(f"bootstrap_draws: expected at least 1 draw, got {self.bootstrap_draws}")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def full_config(**overrides: Any) -> BenchConfig:
    """The full benchmark."""
    return replace(BenchConfig(), **overrides)


def quick_config(**overrides: Any) -> BenchConfig:
    """A few minutes: fewer steps and images, the rows every verdict needs, the same metrics."""
    base = BenchConfig(
        quick=True,
        methods=QUICK_METHODS,
        num_seeds=2,
        recipe_changes={"steps": 30, "warmup_steps": 10, "n_critic": 2},
        probe=replace(ProbeSettings(), probe_train_images=None, reader_steps=150, mlp_steps=200,
                      trained_steps=500),
        max_train_images=160,
        max_val_images=64,
        timing_images=4,
        timing_repeats=2,
        encoder_timing_images=2,
        llm_repeats=1,
    )
    return replace(base, **overrides)
