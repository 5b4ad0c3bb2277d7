"""Training a slots compressor from in-memory tokens with a named recipe (the benchmark's rows)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from toconv.models.slots import SlotCompressor, init_slots
from toconv.objective.step import train_on_tokens
from toconv.recipes import Recipe, get_recipe

#: The compressor each slots recipe trains (fields of :class:`~toconv.models.SlotConfig`).
SLOT_RECIPE_CONFIGS: dict[str, dict[str, Any]] = {
    "slots": {},
    "slots-vq": {"vq_blocks": 8, "codebook_size": 64},
}


def train_slots(tokens: Tensor, output_grid_size: int, recipe: str = "slots", seed: int = 0,
                changes: dict[str, Any] | None = None,
                **config: Any) -> tuple[SlotCompressor, dict[str, float]]:
    """Train a slots compressor on (T, N, C) tokens with recipe ``recipe`` at ``seed``.

    The start is :func:`~toconv.models.init_slots` on the first ``pca_images`` images (seeded by
    ``seed``), with the recipe's compressor config (``SLOT_RECIPE_CONFIGS``) updated by
    ``config``; then :func:`~toconv.objective.train_on_tokens` with the recipe (its fields updated
    by ``changes``, as :meth:`Recipe.changed`). Returns the compressor (eval mode) and the last
    step's losses, with the codebook usage under ``vq_used`` / ``vq_perplexity`` when it has VQ.
    """
    if recipe not in SLOT_RECIPE_CONFIGS:
        raise ValueError(f"unknown slots recipe {recipe!r}; expected one of "
                         f"{', '.join(sorted(SLOT_RECIPE_CONFIGS))}")
    plan: Recipe = get_recipe(recipe).changed(**(changes or {}))
    start = init_slots(tokens[: plan.pca_images], output_grid_size, seed=seed,
                       **{**SLOT_RECIPE_CONFIGS[recipe], **config})
    compressor, losses = train_on_tokens(tokens, start, plan, seed)
    losses.update({f"vq_{k}": v for k, v in compressor.codebook_usage().items()})
    return compressor, losses
