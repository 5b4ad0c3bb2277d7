"""LLaVA's training script with token compression: ``python -m llava_patch.train [LLaVA args]``.

Takes every argument of ``llava/train/train.py`` plus the :class:`CompressionArguments` flags
(``--use_token_compression True --compression_output_size 12 ...``) and
``--attn_implementation`` (e.g. ``flash_attention_2``, what LLaVA's ``train_mem.py`` passes).
"""

from __future__ import annotations

import sys

from llava_patch.patch import apply


def pop_option(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """Remove ``--name value`` / ``--name=value`` from ``argv``; returns the rest and the value."""
    flag = f"--{name}"
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 >= len(argv):
                raise ValueError(f"{flag} expects a value, got none")
            return argv[:i] + argv[i + 2:], argv[i + 1]
        if arg.startswith(flag + "="):
            return argv[:i] + argv[i + 1:], arg.split("=", 1)[1]
    return argv, None


def main(argv: list[str] | None = None) -> None:
    apply()
    from llava.train import train as llava_train

    args, attn = pop_option(list(sys.argv[1:] if argv is None else argv), "attn_implementation")
    saved, sys.argv = sys.argv, [sys.argv[0], *args]
    try:
        llava_train.train(attn_implementation=attn)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
