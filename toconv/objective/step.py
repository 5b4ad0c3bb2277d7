"""One training step, its optimizers, and the in-memory loop the benchmark trains with.

The trainer (:mod:`toconv.training`) calls :func:`train_step` with accelerate's backward and
gradient clipping; :func:`train_on_tokens` calls it plainly. Both therefore train the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from toconv.data.sampler import step_batches
from toconv.models import TokenCompressor
from toconv.objective.objective import CompressorObjective
from toconv.recipes import Recipe


def make_optimizers(objective: CompressorObjective, recipe: Recipe) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """(critic optimizer, compressor+decoder optimizer) of the recipe; Adam with ``recipe.betas``."""
    betas = tuple(recipe.betas)
    critic = torch.optim.Adam(objective.critic_parameters(), lr=recipe.lr_critic, betas=betas)
    generator = torch.optim.Adam(objective.generator_param_groups(recipe.lr_compressor, recipe.lr_decoder),
                                 betas=betas)
    return critic, generator


def _plain_backward(loss: Tensor) -> None:
    loss.backward()


def train_step(objective: CompressorObjective, tokens: Tensor, critic_opt: torch.optim.Optimizer,
               generator_opt: torch.optim.Optimizer, recipe: Recipe, step: int,
               generator: torch.Generator | None = None, model: nn.Module | None = None,
               backward: Callable[[Tensor], None] = _plain_backward,
               clip_grad_norm: Callable[[Iterable[nn.Parameter], float], object] = nn.utils.clip_grad_norm_,
               ) -> dict[str, float]:
    """``recipe.n_critic`` critic updates, then one compressor+decoder update, on (B, N, C) tokens.

    The compressed tokens are computed once and shared by the critic updates (the compressor does
    not move between them); with ``wgan_weight`` 0 there are no critic updates. During the first
    ``recipe.warmup_steps`` steps the compressor is held; with ``recipe.freeze_pinned`` and a
    pooling-pinned start only its residual code moves. ``model`` is what the losses are computed
    through (a DDP/mixed-precision wrapper of ``objective``; default the objective itself);
    ``backward`` and ``clip_grad_norm`` default to plain torch.

    Returns the step's losses as floats.
    """
    model = objective if model is None else model
    losses: dict[str, float] = {}
    if objective.adversarial and recipe.n_critic:
        with torch.no_grad():
            fake = objective.compressor(tokens)
        for _ in range(recipe.n_critic):
            critic_opt.zero_grad(set_to_none=True)
            critic = model(tokens, "critic", generator, fake)
            backward(critic["loss"])
            critic_opt.step()
        losses.update(critic_loss=float(critic["loss"].detach()), wasserstein=float(critic["wasserstein"]),
                      gradient_penalty=float(critic["gradient_penalty"]))
    generator_opt.zero_grad(set_to_none=True)
    gen = model(tokens, "generator")
    backward(gen["loss"])
    if step < recipe.warmup_steps:
        objective.hold_compressor()
    objective.project_pinned_gradients()
    if recipe.grad_clip is not None:
        clip_grad_norm(objective.generator_parameters(), recipe.grad_clip)
    generator_opt.step()
    objective.restore_pinned()
    losses.update({k: float(gen[k].detach()) for k in ("loss", "adversarial", "reconstruction", "cosine")})
    return losses


def train_on_tokens(tokens: Tensor, start: TokenCompressor, recipe: Recipe,
                    seed: int = 0) -> tuple[TokenCompressor, dict[str, float]]:
    """Train a copy of ``start`` on in-memory (n, N, C) tokens for ``recipe.steps`` steps.

    Batches, seeding and steps are the trainer's (:func:`~toconv.data.step_batches` with
    ``seed``; modules built after ``torch.manual_seed(seed)``; a generator seeded with ``seed``
    for the critic's samples), so the trainer on the same tokens gives the same weights.
    Returns the compressor (eval mode) and the last step's losses.
    """
    if recipe.steps is None:
        raise ValueError("train_on_tokens needs a recipe with a step count, got steps=None")
    compressor = copy.deepcopy(start).train()
    torch.manual_seed(seed)
    objective = CompressorObjective.from_recipe(compressor, recipe).train()
    critic_opt, generator_opt = make_optimizers(objective, recipe)
    generator = torch.Generator(device=tokens.device).manual_seed(seed)
    last: dict[str, float] = {}
    for step, idx in enumerate(step_batches(tokens.shape[0], recipe.batch_size, recipe.steps, seed)):
        last = train_step(objective, tokens[idx], critic_opt, generator_opt, recipe, step, generator)
    return compressor.eval(), last
