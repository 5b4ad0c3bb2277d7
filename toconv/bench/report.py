"""Write a benchmark report folder: results.json (every figure), report.md and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = ("size", "method", "tokens", "R² linear", "R² decoder", "centred cos", "Fréchet", "sliced W2",
           "plug-in cos", "params", "MFLOPs/img", "CPU ms/img", "% encoder")


def size_label(block: dict[str, Any]) -> str:
    """``24→12`` from a size block's geometry."""
    g = block["geometry"]
    return f"{g['input_grid_size']}→{g['output_grid_size']}"


def _row(label: str, name: str, m: dict[str, Any], encoder_ms: float | None) -> list[str]:
    share = f"{100 * m['cpu_ms_per_image'] / encoder_ms:.2f}" if encoder_ms else "n/a"
    return [label, name, str(m["tokens"]), f"{m['information_linear']['r2']:.3f}",
            f"{m['information']['r2']:.3f}",
            f"{m['information']['centered_cosine']:.3f}", f"{m['frechet']:.3f}",
            f"{m['sliced_wasserstein']:.4f}", f"{m['plug_in']['centered_cosine']:.3f}",
            f"{m['params']:,}", f"{m['mflops_per_image']:.1f}", f"{m['cpu_ms_per_image']:.3f}", share]


def _table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables with the environment and notes."""
    encoder_ms = report["encoder"].get("ms_per_image")
    rows = []
    for block in report["sizes"].values():
        label = size_label(block)
        rows += [_row(label, name, m, encoder_ms) for name, m in block["methods"].items()]
        ref = block["reference"]
        rows.append([label, "*originals (floor)*", "", "", "", "", f"{ref['frechet']:.3f}",
                     f"{ref['sliced_wasserstein']:.4f}", "", "", "", "", ""])
    data, env = report["data"], report["environment"]
    ceiling = report["plug_in_ceiling"]
    checkpoints = report.get("checkpoints") or []
    lines = ["# toconv benchmark", "",
             f"Data: {data.get('kind')} {data.get('encoder', '')} — {data['train_images']} train / "
             f"{data['val_images']} val images, {data['tokens']} tokens × {data['dim']}. "
             f"Seed {report['config']['seed']}. All figures on the val split.", "",
             *(["Trained checkpoints scored (rows named <run>/<file>): "
                + ", ".join(f"`{c}`" for c in checkpoints), ""] if checkpoints else []),
             *_table(COLUMNS, rows), "",
             f"Plug-in ceiling (head on the original {data['tokens']} tokens): centred cosine "
             f"{ceiling['centered_cosine']:.3f}, raw cosine {ceiling['cosine']:.3f}.", ""]
    enc = report["encoder"]
    lines.append(f"Encoder forward: {enc['ms_per_image']:.1f} ms/image on CPU ({enc['encoder']})."
                 if encoder_ms else f"Encoder forward: {enc['skipped']}.")
    llm = report["llm_prefill"]
    lines += ["", f"LLM prefill (random LlamaForCausalLM, {llm['params'] / 1e6:.0f} M params, "
              f"{llm['model']}), CPU, one image + {report['config']['llm_text_tokens']} text tokens:", ""]
    lines += _table(["image tokens", "prefill ms", f"ratio to {data['tokens']}"],
                    [[str(r["image_tokens"]), f"{r['prefill_ms']:.1f}", f"{r['ratio']:.3f}"] for r in llm["rows"]])
    lines += ["", "Vicuna-7B (analytic): prefill FLOPs and fp16 KV cache:", ""]
    lines += _table(["image tokens", "prefill TFLOPs", "ratio", "KV cache MiB"],
                    [[str(r["image_tokens"]), f"{r['prefill_tflops']:.2f}", f"{r['prefill_ratio']:.3f}",
                      f"{r['kv_cache_mib']:.0f}"] for r in report["vicuna7b"]])
    gpu = report["gpu_throughput"]
    lines += ["", "GPU throughput (CLIP-L/336, random weights, bf16, batch "
              f"{report['config']['gpu_batch_size']}): "
              + (gpu["skipped"] if "skipped" in gpu else
                 ", ".join(f"{r['compressor']} {r['images_per_s']:.0f} img/s" for r in gpu["rows"])
                 + f" on {gpu['device']}")]
    lines += ["", f"Environment: Python {env['python']}, {env['platform']}, {env['cpu_count']} CPUs, "
              f"torch threads {env['torch_threads']}, versions {env['versions']}. "
              f"Total {report['total_seconds'] / 60:.1f} min.", "",
              "Notes: R² linear is a closed-form ridge regression of every RF token on the "
              "compressed token (one affine map per RF slot); R² decoder and the centred cosine come "
              "from a trained RF decoder of the same size for every method. Average pooling is "
              "non-overlapping adaptive pooling; keep-center keeps each RF's centre token (a "
              "real-token reference, Fréchet ≈ floor by construction); ToMe tokens are matched to "
              "RFs through the merge source map (the merged token holding each RF's centre) for "
              "the R² probes only. Fréchet and sliced W2 use tokens divided by the mean "
              "per-channel std of the train originals and the same sample count per method.", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """info_kept.png / info_kept_decoder.png (R² vs tokens), distribution.png (Fréchet, log, vs
    tokens), plug_in.png and tradeoff.png (linear R² vs Fréchet per size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    sizes = report["sizes"]
    names = list(next(iter(sizes.values()))["methods"])
    paths = []
    panels = (("info_kept.png", lambda m: m["information_linear"]["r2"], "val R² (linear RF decoder)"),
              ("info_kept_decoder.png", lambda m: m["information"]["r2"], "val R² (trained RF decoder)"),
              ("distribution.png", lambda m: m["frechet"], "Fréchet distance"),
              ("plug_in.png", lambda m: m["plug_in"]["centered_cosine"], "plug-in centred cosine"))
    for fname, key, ylabel in panels:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in names:
            pts = [(b["tokens"], key(b["methods"][name])) for b in sizes.values() if name in b["methods"]]
            ax.plot(*zip(*pts, strict=True), marker="o", label=name)
        if fname == "distribution.png":
            ax.plot([b["tokens"] for b in sizes.values()], [b["reference"]["frechet"] for b in sizes.values()],
                    "k--", label="originals (floor)")
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        if fname == "plug_in.png":
            ax.axhline(report["plug_in_ceiling"]["centered_cosine"], color="k", ls="--", label=f"{report['data']['tokens']} originals")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks([b["tokens"] for b in sizes.values()], [str(b["tokens"]) for b in sizes.values()])
        ax.set_xlabel("tokens per image")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=120)
        plt.close(fig)
        paths.append(out_dir / fname)
    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 3.6), squeeze=False)
    for ax, block in zip(axes[0], sizes.values(), strict=True):
        for name, m in block["methods"].items():
            ax.scatter(m["frechet"], m["information_linear"]["r2"], label=name)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(size_label(block))
        ax.set_xlabel("Fréchet (lower is better)")
        ax.set_ylabel("linear R² (higher is better)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "tradeoff.png", dpi=120)
    plt.close(fig)
    return [*paths, out_dir / "tradeoff.png"]


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """Write results.json, report.md and the plots into ``out_dir``; return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    plot(report, out)
    return out
