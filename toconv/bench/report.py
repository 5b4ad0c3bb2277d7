"""Write a benchmark report folder: results.json (every figure), report.md and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = ("size", "method", "tokens", "info R² (grid)", "R² linear (diag.)", "reader acc",
           "reader CE", "position acc", "Fréchet", "sliced W2", "plug-in cos", "params", "MFLOPs/img",
           "CPU ms/img", "% encoder")

#: The proxies every run checks against the negative controls: (label, key path, higher is better).
PROXIES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("info R² (grid)", ("information", "r2"), True),
    ("R² linear", ("information_linear", "r2"), True),
    ("reader acc", ("reader", "rf_accuracy"), True),
    ("reader CE", ("reader", "rf_cross_entropy"), False),
    ("position acc", ("position_reader", "accuracy"), True),
    ("Fréchet", ("frechet",), False),
    ("plug-in cos", ("plug_in", "centered_cosine"), True),
)
CONTROLS = ("control-rotated", "control-shuffled")


def size_label(block: dict[str, Any]) -> str:
    """``24→12`` from a size block's geometry."""
    g = block["geometry"]
    return f"{g['input_grid_size']}→{g['output_grid_size']}"


def value(m: dict[str, Any], path: tuple[str, ...]) -> float:
    for key in path:
        m = m[key]
    return float(m)


def spread(m: dict[str, Any], path: tuple[str, ...]) -> float:
    """Seed std of a figure (0 for a method without seeds)."""
    return value(m["std"], path) if "std" in m else 0.0


def _fmt(m: dict[str, Any], path: tuple[str, ...], digits: int = 3) -> str:
    text = f"{value(m, path):.{digits}f}"
    return f"{text} ± {spread(m, path):.{digits}f}" if "std" in m else text


def _row(label: str, name: str, m: dict[str, Any], encoder_ms: float | None) -> list[str]:
    share = f"{100 * m['cpu_ms_per_image'] / encoder_ms:.2f}" if encoder_ms else "n/a"
    reader = f"{_fmt(m, ('reader', 'rf_cross_entropy'), 2)} (floor {m['reader']['rf_entropy_floor']:.2f})"
    return [label, name, str(m["tokens"]), _fmt(m, ("information", "r2")),
            _fmt(m, ("information_linear", "r2")), _fmt(m, ("reader", "rf_accuracy")), reader,
            _fmt(m, ("position_reader", "accuracy")), _fmt(m, ("frechet",), 2),
            _fmt(m, ("sliced_wasserstein",), 4), _fmt(m, ("plug_in", "centered_cosine")),
            f"{m['params']:,}", f"{m['mflops_per_image']:.1f}", f"{m['cpu_ms_per_image']:.3f}", share]


def _table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def compare(a: dict[str, Any], b: dict[str, Any], path: tuple[str, ...], higher: bool,
            floor_std: float = 0.0) -> tuple[float, str]:
    """Difference ``a − b`` of one figure and its verdict for ``a``: ``better``/``worse`` only
    beyond 2 std of the difference (seed spreads combined; for Fréchet at least the floor's split
    spread), else ``none``."""
    diff = value(a, path) - value(b, path)
    noise = 2 * max((spread(a, path) ** 2 + spread(b, path) ** 2) ** 0.5,
                    floor_std if path == ("frechet",) else 0.0)
    if abs(diff) <= noise:
        return diff, "none"
    return diff, "better" if (diff > 0) == higher else "worse"


def verdicts(block: dict[str, Any]) -> list[str]:
    """Markdown lines: the issue's checks of toconv-rf at one size, and the controls' check."""
    methods, floor_std = block["methods"], block["reference"]["frechet_draw_std"]
    if "toconv-rf" not in methods:
        return []
    rf = methods["toconv-rf"]
    lines = []
    for other in ("avg-pool", "toconv-init"):
        if other not in methods:
            continue
        parts = []
        for label, path, higher in PROXIES:
            diff, word = compare(rf, methods[other], path, higher, floor_std)
            parts.append(f"{label} {diff:+.3f} ({word})")
        lines.append(f"* toconv-rf − {other}: " + "; ".join(parts) + ".")
    blind = []
    if all(c in methods for c in CONTROLS):
        for label, path, higher in PROXIES:
            if any(compare(rf, methods[c], path, higher, floor_std)[1] != "better" for c in CONTROLS):
                blind.append(label)
        lines.append("* Negative controls: " + (
            f"**not ranked below toconv-rf (beyond 2 std) by: {', '.join(blind)}**" if blind
            else "every proxy ranks toconv-rf above both controls") + ".")
    ref = block["reference"]
    below = [n for n, m in methods.items() if m["frechet"] < ref["frechet"] - 2 * floor_std]
    if below:
        lines.append(f"* Below the real-vs-real Fréchet floor ({ref['frechet']:.2f} ± {floor_std:.2f}): "
                     f"{', '.join(below)} — a distance below the floor is sampling noise, not a "
                     "better match.")
    return lines


def _seed_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for block in report["sizes"].values():
        for name, m in block["methods"].items():
            for seed, r in m.get("seeds", {}).items():
                rows.append([size_label(block), name, seed, f"{r['information']['r2']:.4f}",
                             f"{r['information_linear']['r2']:.4f}", f"{r['reader']['rf_accuracy']:.4f}",
                             f"{r['position_reader']['accuracy']:.4f}", f"{r['frechet']:.3f}"])
    return rows


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables with the verdicts, the readers, the environment and notes."""
    encoder_ms = report["encoder"].get("ms_per_image")
    config = report["config"]
    rows = []
    for block in report["sizes"].values():
        label = size_label(block)
        rows += [_row(label, name, m, encoder_ms) for name, m in block["methods"].items()]
        ref = block["reference"]
        rows.append([label, "*originals (floor)*", "", "", "", "", "", "",
                     f"{ref['frechet']:.2f} ± {ref['frechet_draw_std']:.2f}", "", "", "", "", "", ""])
    data, env, readers = report["data"], report["environment"], report["readers"]
    checkpoints = report.get("checkpoints") or []
    seeds = [config["seed"] + i for i in range(config["num_seeds"])]
    quick = (["**Quick run** (`--quick`: fewer images, steps and reader updates): for checking an "
              "install or a change, not for conclusions; with few validation images the Fréchet "
              "floor is high and noisy, and a method below it is within that noise.", ""]
             if config.get("quick") else [])
    lines = ["# toconv benchmark", "", *quick,
             f"Data: {data.get('kind')} {data.get('encoder', '')} — {data['train_images']} train / "
             f"{data['val_images']} val images, {data['tokens']} tokens × {data['dim']}. "
             f"Seeded methods at seeds {seeds} (mean ± sample std); the rest are deterministic. "
             "All figures on the val split.", "",
             *(["Trained checkpoints scored (rows named <run>/<file>, seed-independent): "
                + ", ".join(f"`{c}`" for c in checkpoints), ""] if checkpoints else []),
             *_table(COLUMNS, rows), ""]
    lines += ["## Verdicts", "",
              "A difference counts only beyond 2 std of the difference (seed spreads; for Fréchet "
              "also at least the floor's spread over draws); `none` otherwise.", ""]
    for block in report["sizes"].values():
        lines += [f"**{size_label(block)}**", "", *verdicts(block), ""]
    token, position = readers["token_reader"], readers["position_reader"]
    ceiling = readers["plug_in_ceiling"]
    lines += ["## Readers", "",
              f"k-means pseudo-labels (K = {readers['clusters']}) of real training tokens. Token "
              f"reader (linear, per token): accuracy {token['accuracy_on_real_tokens']:.3f} on real "
              f"val tokens' own labels; training loss {token['final_loss']:.3f}, last change "
              f"{token['last_change']:+.4f}. Position reader (transformer, 2D positions): "
              f"{position['on_full_real_grid']['accuracy']:.3f} with the full real grid visible; "
              f"training loss {position['final_loss']:.3f}, last change {position['last_change']:+.4f}. "
              f"Plug-in head ceiling on the original {data['tokens']} tokens: centred cosine "
              f"{ceiling['centered_cosine']:.3f} (demoted to a diagnostic: it pools without "
              "positions and scores every method near its ceiling).", ""]
    seed_rows = _seed_rows(report)
    if seed_rows:
        lines += ["## Per seed", "", *_table(["size", "method", "seed", "info R² (grid)", "R² linear",
                                              "reader acc", "position acc", "Fréchet"], seed_rows), ""]
    enc = report["encoder"]
    lines.append(f"Encoder forward: {enc['ms_per_image']:.1f} ms/image on CPU ({enc['encoder']})."
                 if encoder_ms else f"Encoder forward: {enc['skipped']}.")
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
              f"torch threads {env['torch_threads']}, versions {env['versions']}. "
              f"Total {report['total_seconds'] / 60:.1f} min.", "",
              "Notes: **info R² (grid)** rebuilds every original token from the compressed token of "
              "its grid cell (the average-pooling window) with a closed-form ridge map per cell slot: "
              "the same target and capacity for every method. **R² linear** (diagnostic) rebuilds "
              "ToConv's receptive fields the same way; both are linear, so any invertible affine "
              "map of the tokens (the rotated control) scores alike, and the PCA start is the "
              "optimal rank-C linear code of its RF by construction. **reader acc**: share of "
              "tokens whose label under the frozen token reader is the most frequent label of "
              "their cell; **reader CE** against the cell's label distribution, with the entropy "
              "floor of a perfect reader. **position acc**: labels of all original tokens "
              "predicted by the frozen position reader from the compressed tokens at their window "
              "centres. **Fréchet** and sliced W2: tokens divided by the mean per-channel std of "
              "the train originals, the same number of tokens drawn from every val image for the "
              "reference, the floor and each method (at most "
              f"{config['probe']['frechet_samples_per_image']}); reference and floor are disjoint "
              "real tokens away from the RF centres (no row shared with keep-center), mean ± "
              f"spread over {config['probe']['frechet_draws']} draws. Bilinear is an antialiased "
              "resize; keep-center keeps each ToConv RF's centre token (real tokens); ToMe tokens "
              "are matched to cells through the merge source map for the probes and readers. "
              "Controls (built from the first seed's toconv-rf): control-rotated is toconv-rf "
              "rotated in its whitened token space (mean and covariance kept), control-shuffled is "
              "toconv-rf with positions permuted per image.", ""]
    return "\n".join(lines)


def _offsets(count: int, spread_factor: float = 0.025) -> list[float]:
    """Multiplicative x offsets that spread ``count`` series apart on a log axis."""
    return [(1 + spread_factor) ** (i - (count - 1) / 2) for i in range(count)]


def plot(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """info_kept.png (fair R²), readers.png (token and position reader), distribution.png
    (Fréchet with the floor), plug_in.png, each against tokens per image with seed error bars,
    and tradeoff.png (fair R² against Fréchet per size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    sizes = report["sizes"]
    names = list(dict.fromkeys(n for b in sizes.values() for n in b["methods"]))
    tokens = [b["tokens"] for b in sizes.values()]
    markers = "osD^vP*XhpH<>d"
    styles = ("-", "--", "-.", ":")
    offsets = _offsets(len(names))
    title = "quick run" if report["config"].get("quick") else "full run"

    def series(ax: Any, path: tuple[str, ...]) -> None:
        for i, name in enumerate(names):
            pts = [(b["tokens"] * offsets[i], value(b["methods"][name], path), spread(b["methods"][name], path))
                   for b in sizes.values() if name in b["methods"]]
            xs, ys, es = zip(*pts, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker=markers[i % len(markers)], ls=styles[i % len(styles)],
                        capsize=2, label=name, ms=5)

    def token_axis(ax: Any) -> None:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(tokens, [str(t) for t in tokens])
        ax.set_xlabel("tokens per image (log; series offset sideways to stay apart)")

    panels = (("info_kept.png", [(("information", "r2"), "info R² (grid, fair probe)")], "Information kept"),
              ("readers.png", [(("reader", "rf_accuracy"), "token reader: cell-label accuracy"),
                               (("position_reader", "accuracy"), "position reader: dense accuracy")],
               "Frozen readers fed compressed tokens"),
              ("distribution.png", [(("frechet",), "Fréchet distance to real tokens (log)")],
               "Distribution match (lower is better)"),
              ("plug_in.png", [(("plug_in", "centered_cosine"), "plug-in centred cosine")],
               "Plug-in CLS head (diagnostic)"))
    paths = []
    for fname, axes_spec, heading in panels:
        fig, axes = plt.subplots(1, len(axes_spec), figsize=(6.4 * len(axes_spec), 4.4), squeeze=False)
        for ax, (path, ylabel) in zip(axes[0], axes_spec, strict=True):
            series(ax, path)
            if path == ("frechet",):
                floor = [b["reference"]["frechet"] for b in sizes.values()]
                sd = [b["reference"]["frechet_draw_std"] for b in sizes.values()]
                ax.fill_between(tokens, [f - 2 * s for f, s in zip(floor, sd, strict=True)],
                                [f + 2 * s for f, s in zip(floor, sd, strict=True)], color="k",
                                alpha=0.15, label="real-vs-real floor ± 2 sd")
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(NullFormatter())
            if path == ("plug_in", "centered_cosine"):
                ax.axhline(report["readers"]["plug_in_ceiling"]["centered_cosine"], color="k", ls="--",
                           label=f"{report['data']['tokens']} originals")
            token_axis(ax)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7, loc="best")
        fig.suptitle(f"{heading} — {title}, mean ± seed std")
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=120)
        plt.close(fig)
        paths.append(out_dir / fname)
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.4 * len(sizes), 4), squeeze=False)
    for ax, block in zip(axes[0], sizes.values(), strict=True):
        for i, (name, m) in enumerate(block["methods"].items()):
            ax.errorbar(m["frechet"], m["information"]["r2"], xerr=spread(m, ("frechet",)),
                        yerr=spread(m, ("information", "r2")), marker=markers[i % len(markers)], ls="",
                        label=name)
        ax.axvline(block["reference"]["frechet"], color="k", ls=":", label="floor")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(size_label(block))
        ax.set_xlabel("Fréchet (log, lower is better)")
        ax.set_ylabel("info R² (grid, higher is better)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Information against distribution — {title}")
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
