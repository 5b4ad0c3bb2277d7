"""Write a benchmark report folder: results.json (every figure), report.md and PNG plots."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from toconv.bench.runner import CONTROLS

#: Table columns: (label, metric key, digits).
FIGURES: tuple[tuple[str, str, int], ...] = (
    ("information", "information", 3), ("of ceiling", "information_ceiling", 3),
    ("reader linear", "reader_linear", 3), ("reader MLP", "reader_mlp", 3),
    ("reader trained", "reader_trained", 3), ("Fréchet", "frechet", 2))
READERS = (("reader_linear", "frozen linear reader"), ("reader_mlp", "frozen MLP reader"),
           ("reader_trained", "trained reader"))


def size_label(block: dict[str, Any]) -> str:
    """``24→12`` from a size block's geometry."""
    g = block["geometry"]
    return f"{g['input_grid_size']}→{g['output_grid_size']}"


def _fmt(figure: dict[str, Any], digits: int) -> str:
    if figure["mean"] is None:
        return "too few tokens"
    return f"{figure['mean']:.{digits}f} ± {figure['std']:.{digits}f}"


def _table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def verdict(block: dict[str, Any], method: str, against: str, metric: str) -> dict[str, Any] | None:
    for v in block["verdicts"]:
        if (v["method"], v["against"], v["metric"]) == (method, against, metric):
            return v
    return None


def _word(v: dict[str, Any] | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    if v["diff"] is None:
        return v["verdict"]
    return f"{v['diff']:+.{digits}f} ± {v['std']:.{digits}f} ({v['verdict']})"


def targets(block: dict[str, Any]) -> list[tuple[str, bool | None]]:
    """The readers issue's targets at one size: (statement, met) with None where a row is missing."""
    methods = block["methods"]

    def is_(method: str, against: str, metric: str, words: tuple[str, ...]) -> bool | None:
        v = verdict(block, method, against, metric)
        return None if v is None else v["verdict"] in words

    ceiling = methods.get("toconv-rf", {}).get("information_ceiling", {}).get("mean")
    init = [is_("toconv-rf", "toconv-init", m, ("better",)) for m in ("reader_mlp", "reader_trained")]
    controls = [is_(c, "toconv-rf", m, ("worse",)) for c in CONTROLS for m in ("reader_mlp", "reader_trained")]
    return [
        ("toconv-rf vs avg-pool, reader linear: not worse beyond noise",
         is_("toconv-rf", "avg-pool", "reader_linear", ("better", "within noise"))),
        ("toconv-rf vs avg-pool, reader MLP: better beyond noise",
         is_("toconv-rf", "avg-pool", "reader_mlp", ("better",))),
        ("toconv-rf vs avg-pool, reader trained: better beyond noise",
         is_("toconv-rf", "avg-pool", "reader_trained", ("better",))),
        ("toconv-rf information ≥ 0.95 of its ceiling (mean)", None if ceiling is None else ceiling >= 0.95),
        ("toconv-rf vs toconv-init: better beyond noise on reader MLP or reader trained",
         None if None in init else any(init)),
        ("both controls below toconv-rf beyond noise on reader MLP and reader trained",
         None if None in controls else all(controls)),
    ]


def markdown(report: dict[str, Any]) -> str:
    """The report: tables with run std, paired verdicts, the targets, the instruments, costs."""
    config, data, env = report["config"], report["data"], report["environment"]
    first = next(iter(report["sizes"].values()))
    n_runs = len(first["runs"])
    quick = (["**Quick run** (`--quick`: fewer images, steps and reader updates): for checking an "
              "install or a change, not for conclusions.", ""] if config.get("quick") else [])
    lines = ["# toconv benchmark", "", *quick,
             f"Data: {data.get('kind')} {data.get('encoder', '')} — {data['train_images']} train / "
             f"{data['val_images']} val images, {data['tokens']} tokens × {data['dim']}. "
             f"Every figure is mean ± std over {n_runs} runs: {config['num_seeds']} seeds (seed k "
             f"trains the seeded methods and refits k-means, every reader and Fréchet's real "
             f"samples) × {config['bootstrap_draws']} bootstrap draws of the val images. Every method "
             "has the same runs, so differences are paired.", ""]
    checkpoints = report.get("checkpoints") or []
    if checkpoints:
        lines += ["Trained checkpoints scored (rows named <run>/<file>): "
                  + ", ".join(f"`{c}`" for c in checkpoints), ""]
    encoder_ms = report["encoder"].get("ms_per_image")
    for block in report["sizes"].values():
        label = size_label(block)
        rows = []
        for name, m in block["methods"].items():
            share = f"{100 * m['cpu_ms_per_image'] / encoder_ms:.2f}" if encoder_ms else "n/a"
            rows.append([name, str(m["tokens"]), *(_fmt(m[key], d) for _, key, d in FIGURES),
                         f"{m['params']:,}", f"{m['mflops_per_image']:.1f}",
                         f"{m['cpu_ms_per_image']:.3f}", share])
        floor = block["floor"]
        rows.append(["*originals (floor)*", "", "", "", "", "", "", _fmt(floor, 2), "", "", "", ""])
        lines += [f"## {label}", "",
                  *_table(["method", "tokens", *(f for f, _, _ in FIGURES), "params", "MFLOPs/img",
                           "CPU ms/img", "% encoder"], rows), "",
                  f"Information ceiling (the cell's own PCA code): R² {_fmt(block['ceiling_information'], 3)}. "
                  f"Fréchet: {block['frechet_tokens_per_set']} tokens per set"
                  + ("" if block["frechet_enough_tokens"] else " (too few: fewer than "
                     f"{config['probe']['frechet_tokens_per_dim']} per dimension, so not reported)")
                  + ".", "", "**Paired verdicts** (difference ± std of the paired difference; a "
                  "verdict only beyond 2 std):", ""]
        pairs = list(dict.fromkeys((v["method"], v["against"]) for v in block["verdicts"]))
        keys = [key for _, key, _ in FIGURES]
        lines += _table(["method", "against", *(f for f, _, _ in FIGURES)],
                        [[a, b, *(_word(verdict(block, a, b, key)) for key in keys)] for a, b in pairs])
        lines += ["", "**Targets:**", ""]
        lines += [f"* {text}: " + ("n/a (row missing)" if met is None else "**met**" if met else "**not met**")
                  for text, met in targets(block)]
        curves = [[name, *(f"{statistics.fmean(c[k] for c in m['trained_reader_curves']):.3f}"
                           for k in ("final_loss", "last_change"))]
                  for name, m in block["methods"].items()]
        lines += ["", "Trained reader curves (mean over runs): the same budget for every method.", "",
                  *_table(["method", "final loss", "last change"], curves), ""]
    lines += ["## Instruments", ""]
    lines += _table(["seed", "k-means K", "linear acc on real tokens", "linear last change",
                     "MLP acc on real tokens", "MLP last change"],
                    [[str(i["seed"]), str(i["clusters"]), f"{i['linear']['accuracy_on_real_tokens']:.3f}",
                      f"{i['linear']['last_change']:+.4f}", f"{i['mlp']['accuracy_on_real_tokens']:.3f}",
                      f"{i['mlp']['last_change']:+.4f}"] for i in report["instruments"]])
    enc = report["encoder"]
    lines += ["", f"Encoder forward: {enc['ms_per_image']:.1f} ms/image on CPU ({enc['encoder']})."
              if encoder_ms else f"Encoder forward: {enc['skipped']}."]
    llm = report["llm_prefill"]
    lines += ["", f"LLM prefill (random LlamaForCausalLM, {llm['params'] / 1e6:.0f} M params, "
              f"{llm['model']}), CPU, one image + {config['llm_text_tokens']} text tokens:", ""]
    lines += _table(["image tokens", "prefill ms", f"ratio to {data['tokens']}"],
                    [[str(r["image_tokens"]), f"{r['prefill_ms']:.1f}", f"{r['ratio']:.3f}"] for r in llm["rows"]])
    lines += ["", "Vicuna-7B (analytic): prefill FLOPs and fp16 KV cache:", ""]
    lines += _table(["image tokens", "prefill TFLOPs", "ratio", "KV cache MiB"],
                    [[str(r["image_tokens"]), f"{r['prefill_tflops']:.2f}", f"{r['prefill_ratio']:.3f}",
                      f"{r['kv_cache_mib']:.0f}"] for r in report["vicuna7b"]])
    gpu = report["gpu_throughput"]
    lines += ["", "GPU throughput (CLIP-L/336, random weights, bf16, batch "
              f"{config['gpu_batch_size']}): "
              + (gpu["skipped"] if "skipped" in gpu else
                 ", ".join(f"{r['compressor']} {r['images_per_s']:.0f} img/s" for r in gpu["rows"])
                 + f" on {gpu['device']}")]
    lines += ["", f"Environment: Python {env['python']}, {env['platform']}, {env['cpu_count']} CPUs, "
              f"torch threads {env['torch_threads']}, runs in {env['workers']} "
              f"process{'es' * (env['workers'] > 1)} of {env['threads_per_worker']} "
              f"thread{'s' * (env['threads_per_worker'] > 1)}, "
              f"versions {env['versions']}. "
              f"Total {report['total_seconds'] / 60:.1f} min.", "",
              "Notes: **information** rebuilds every original token from the compressed token that "
              "covers it (its grid cell's token; for ToMe and slots the token it was merged into) "
              "with one closed-form ridge map per cell slot, fitted on train; **of ceiling** divides "
              "it by the same probe on the cell's own top-C PCA code (the best linear code of the "
              "cell). **reader linear / MLP**: k-means pseudo-labels (refitted per seed) of real "
              "tokens; a linear classifier and a two-layer GELU MLP (LLaVA's projector shape) with a "
              "linear head, trained on real tokens, frozen, fed compressed tokens; accuracy against "
              "the most frequent label of the originals each token covers. **reader trained**: a "
              "fresh MLP projector + 2-layer transformer with 2D positions, trained with the same "
              "budget on each method's compressed training grids to predict the labels of all the "
              "original tokens from queries at their positions (what LLaVA pretraining does with "
              "compressed tokens; needs no grid). **Fréchet**: tokens divided by the mean "
              "per-channel std of the train originals; reference and floor are disjoint real val "
              "tokens away from the RF centres (no row shared with keep-center), as many per image as "
              "the method gives (or a random subset of the method's tokens), redrawn per seed; the "
              "floor is real against real. Controls are built from toconv-rf at each seed: "
              "control-rotated is rotated at random in the whitened space of the tokens it is scored "
              "on (their mean and covariance kept exactly), control-shuffled has its positions "
              "permuted per image.", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """front.png (each reader against information as a share of its ceiling, one row per size)
    and frechet.png (Fréchet per method and size with the floor), error bars = run std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    names = list(dict.fromkeys(n for b in sizes.values() for n in b["methods"]))
    markers = "osD^vP*XhpH<>d"
    colours = plt.get_cmap("tab10")
    title = "quick run" if report["config"].get("quick") else "full run"
    fig, axes = plt.subplots(len(sizes), len(READERS), figsize=(4.6 * len(READERS), 3.8 * len(sizes)),
                             squeeze=False)
    for row, block in zip(axes, sizes.values(), strict=True):
        for ax, (key, label) in zip(row, READERS, strict=True):
            for i, name in enumerate(names):
                m = block["methods"].get(name)
                if m is None:
                    continue
                x, y = m["information_ceiling"], m[key]
                ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], ls="",
                            marker=markers[i % len(markers)], color=colours(i % 10), capsize=2, label=name)
            ax.set_title(f"{size_label(block)}: {label}")
            ax.set_xlabel("information / ceiling (higher keeps more)")
            ax.set_ylabel(f"{label} accuracy")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"Reading against information — {title}, mean ± run std")
    fig.tight_layout()
    fig.savefig(out_dir / "front.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 4), squeeze=False)
    for ax, block in zip(axes[0], sizes.values(), strict=True):
        shown = [(n, m["frechet"]) for n, m in block["methods"].items() if m["frechet"]["mean"] is not None]
        if shown:
            ax.barh([n for n, _ in shown], [f["mean"] for _, f in shown], xerr=[f["std"] for _, f in shown],
                    color=[colours(names.index(n) % 10) for n, _ in shown], capsize=2)
        floor = block["floor"]
        if floor["mean"] is not None:
            ax.axvspan(floor["mean"] - 2 * floor["std"], floor["mean"] + 2 * floor["std"], color="k",
                       alpha=0.15, label="real vs real ± 2 std")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "too few tokens", transform=ax.transAxes, ha="center")
        ax.invert_yaxis()
        ax.set_title(size_label(block))
        ax.set_xlabel("Fréchet distance to real tokens (lower is closer)")
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"Distribution match — {title}, mean ± run std")
    fig.tight_layout()
    fig.savefig(out_dir / "frechet.png", dpi=110)
    plt.close(fig)
    return [out_dir / "front.png", out_dir / "frechet.png"]


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """Write results.json, report.md and the plots into ``out_dir``; return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    plot(report, out)
    return out
