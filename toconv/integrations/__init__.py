"""Plug a compressor into vision-language models.

:mod:`toconv.integrations.towers` holds what every integration shares (compress a tower's patch
grid with a CLS pass-through, dtype and device handling, loading a checkpoint checked against the
tower). ``llava_patch`` (the original LLaVA repository) and :mod:`toconv.integrations.hf`
(Hugging Face transformers' LLaVA, LLaVA-NeXT and LLaVA-OneVision; ``from toconv.integrations
import hf``) build on it.
"""

from toconv.integrations.towers import compress_patch_tokens, load_tower_compressor, tower_grid_side

__all__ = ["compress_patch_tokens", "load_tower_compressor", "tower_grid_side"]
