"""bench.json -> bench.md (fingerprint, results table, training/export table) and PNG plots (matplotlib, Agg).

Imports neither torch nor anomalib: a report can be rendered again from a bench.json on any machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uad_edge.atomic import atomic_path, write_json_atomic, write_text_atomic

__all__ = ["PLOTS", "load_report", "plot_accuracy_vs_latency", "plot_latency_by_backend", "render_markdown",
           "time_to_model", "write_report"]

PLOTS = ("accuracy_vs_latency.png", "latency_by_backend.png")
_DASH = "—"
#: (column header, quality field) of the results table, per row modality
QUALITY_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "image": [("image AUROC", "image_AUROC"), ("pixel AUROC", "pixel_AUROC"), ("AUPRO", "pixel_AUPRO"),
              ("F1-max", "image_F1Max"), ("P@thr", "image_Precision"), ("R@thr", "image_Recall"),
              ("F1@thr", "image_F1Score")],
    "signal": [("sample AUROC", "sample_AUROC"), ("sample AP", "sample_AP"), ("point AUROC", "point_AUROC")],
}
#: what one input is called, per modality (throughput and FLOPs columns)
_UNIT = {"image": "img", "signal": "window"}
#: the quality field plotted against latency, per modality
_HEADLINE = {"image": "image_AUROC", "signal": "sample_AUROC"}


def _modality(row: dict[str, Any]) -> str:
    modality = str(row.get("modality") or "image")
    return modality if modality in QUALITY_COLUMNS else "image"


def _modalities(rows: list[dict[str, Any]]) -> list[str]:
    """The modalities of the rows, images first (a report of image rows only has ``["image"]``)."""
    found = {_modality(r) for r in rows} or {"image"}
    return sorted(found, key=lambda m: (m != "image", m))


# ---------------------------------------------------------------------------------------------- formatting
def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return _DASH
    if isinstance(value, float) and value != value:  # NaN
        return "nan"
    return f"{value:.{digits}f}"


def _count(value: Any) -> str:
    if value is None:
        return _DASH
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.2f} {suffix}"
    return f"{value:.0f}"


def _batch_columns(report: dict[str, Any]) -> tuple[str, str]:
    """The batch size for latency columns (1 if benchmarked) and the one for throughput (8 if benchmarked)."""
    sizes = [int(s) for s in (report.get("recipe") or {}).get("batch_sizes") or [1]]
    small = 1 if 1 in sizes else min(sizes)
    large = 8 if 8 in sizes else max(sizes)
    return str(small), str(large)


def _model_cell(row: dict[str, Any]) -> str:
    return f"{row['model']} (ref)" if row.get("reference") else str(row["model"])


def _data_cell(row: dict[str, Any]) -> str:
    return f"{row['data']}/{row['category']}" if row.get("category") else str(row["data"])


def time_to_model(row: dict[str, Any]) -> str:
    """One cell: fit seconds, optimiser steps and the fit's peak RSS (``—`` when the fit is unknown; a row scored
    from a checkpoint shows that checkpoint's fit, without the peak RSS this run did not see)."""
    train = row.get("training") or {}
    seconds = train.get("fit_seconds")
    if seconds is None:
        return _DASH
    steps = train.get("steps")
    peak = (row.get("memory") or {}).get("fit_peak_rss_mb")
    parts = [f"{float(seconds):.0f} s"]
    if steps is not None:
        parts.append(f"{int(steps)} steps")
    if peak is not None:
        parts.append(f"{float(peak) / 1024:.1f} GB")
    return " · ".join(parts)


def _backend_cell(row: dict[str, Any]) -> str:
    return f"{row['backend']} (failed)" if row.get("status") != "ok" else str(row["backend"])


def parity_summary(export: dict[str, Any] | None) -> str:
    """One short cell: output differences (fp32/fp16) or the quality drop on validation (int8)."""
    parity = (export or {}).get("parity") or {}
    if not parity:
        return _DASH
    mark = "pass" if parity.get("passed") else "FAIL"
    agree = parity.get("label_agreement")
    labels = f", labels {agree:.0%}" if isinstance(agree, (int, float)) else ""
    if parity.get("mode") == "outputs":
        return (f"{mark}: Δscore {parity.get('max_score_diff', 0):.1e}, Δmap {parity.get('max_map_diff', 0):.1e}"
                f"{labels}")
    # the change in points: a drop is negative, a gain positive
    drops = [f"{name.split('_')[0]} AUROC {-(values.get('drop') or 0) * 100 + 0.0:+.2f} pt"
             for name, values in (parity.get("metrics") or {}).items()]
    return f"{mark}: {', '.join(drops) or 'metrics'}{labels}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------------------------- markdown
def _fingerprint_lines(report: dict[str, Any]) -> list[str]:
    fp = report.get("fingerprint") or {}
    flags = [name for name, present in (fp.get("cpu_flags") or {}).items() if present]
    versions = ", ".join(f"{k} {v}" for k, v in (fp.get("versions") or {}).items() if v)
    peak = report.get("matmul_peak") or {}
    lines = [
        f"- CPU: {fp.get('cpu', '?')}; flags: {', '.join(flags) or 'none of interest'}",
        f"- cores: {fp.get('cores_usable')} usable of {fp.get('cores_logical')} (cgroup cpu.max: "
        f"{fp.get('cgroup_cpu_max') or 'n/a'}); torch threads {fp.get('torch_threads')}, OpenVINO inference "
        f"threads {fp.get('openvino_inference_threads') or 'n/a'}",
        f"- fp32 matmul peak (torch, {peak.get('size', 2048)}², {peak.get('threads')} threads): "
        f"{peak.get('gflops_best')} GFLOP/s best, {peak.get('gflops_median')} median",
        f"- versions: {versions}; Python {fp.get('python')}",
        f"- platform: {fp.get('platform')}; date {fp.get('date')}",
    ]
    if report.get("quick"):
        lines.append("- **quick run** (`--quick`): few timing iterations; latencies are indicative only")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """The bench.md text of a report."""
    recipe = report.get("recipe") or {}
    rows = report.get("rows") or []
    small, large = _batch_columns(report)
    timing = recipe.get("timing") or {}
    lines = [f"# Benchmark: {recipe.get('name', 'bench')}", ""]
    if recipe.get("description"):
        lines += [str(recipe["description"]).strip(), ""]
    lines += _fingerprint_lines(report)
    lines += ["", f"## Results (quality on the test split; latency: median of {timing.get('iterations')} runs after "
              f"{timing.get('warmup')} warm-up)", ""]
    modalities = _modalities(rows)
    for modality in modalities:
        group = [row for row in rows if _modality(row) == modality]
        if len(modalities) > 1:
            lines += [f"### {modality} models", ""]
        elif modality == "signal":
            lines += ["Signal models: sample-level AUROC/AP and point-level AUROC (raw scores); throughput in "
                      "windows per second.", ""]
        columns = QUALITY_COLUMNS[modality]
        header = ["model", "data", "backend", *[name for name, _ in columns], "time to model",
                  f"p50 ms bs{small}", f"p95 ms bs{small}",
                  f"{_UNIT[modality]}/s bs{large}", "GFLOP/s", "peak MB"]
        body = []
        for row in group:
            q = row.get("quality") or {}
            lat_s = (row.get("latency") or {}).get(small) or {}
            lat_l = (row.get("latency") or {}).get(large) or {}
            body.append([_model_cell(row), _data_cell(row), _backend_cell(row),
                         *[_num(q.get(field)) for _, field in columns], time_to_model(row),
                         _num(lat_s.get("p50_ms"), 1), _num(lat_s.get("p95_ms"), 1),
                         _num(lat_l.get("throughput_ips"), 1), _num((row.get("gflops_per_s") or {}).get(small), 1),
                         _num((row.get("memory") or {}).get("inference_peak_rss_mb"), 0)])
        lines += _table(header, body)
        if len(modalities) > 1:
            lines.append("")
    if len(modalities) > 1:
        lines.pop()
    unit = _UNIT[modalities[0]] if len(modalities) == 1 else "input"
    lines += ["", "## Training and export", ""]
    header = ["model", "data", "backend", "epochs", "batches", "steps", "fit s", "params", f"GFLOPs/{unit}",
              "export s", "bundle MB", "parity"]
    body = []
    for row in rows:
        train = row.get("training") or {}
        export = row.get("export") or {}
        flops = row.get("flops_per_image")
        body.append([_model_cell(row), _data_cell(row), _backend_cell(row), _num(train.get("epochs"), 0),
                     _num(train.get("train_batches"), 0), _num(train.get("steps"), 0),
                     _num(train.get("fit_seconds"), 1), _count(row.get("parameters")),
                     _num(None if flops is None else flops / 1e9, 2), _num(export.get("seconds"), 1),
                     _num(export.get("bundle_mb"), 2), parity_summary(row.get("export"))])
    lines += _table(header, body)
    failures = [row for row in rows if row.get("status") != "ok"]
    if failures:
        lines += ["", "## Failures", ""]
        for row in failures:
            text = " ".join(part.strip() for part in str(row.get("error") or "unknown error").splitlines()[:3])
            lines.append(f"- {_model_cell(row)} / {_data_cell(row)} / {row['backend']}: {text[:400]}")
    lines += ["", "## Method", "", "- time to model: the fit's wall seconds (validation passes included), optimiser "
              "steps and peak RSS of the fit phase (whole process); a row scored from a checkpoint shows that "
              "checkpoint's fit (from its run's metrics.json) without a peak",
              f"- GFLOP/s: at batch {small}; peak MB: peak RSS of the inference phase (all batch "
              f"sizes); memory: {report.get('memory_method', _DASH)}"]
    lines += [f"- {note}" for note in report.get("notes") or []]
    if report.get("seconds") is not None:
        lines.append(f"- total benchmark time: {report['seconds']} s")
    lines += ["", "Plots: [accuracy vs latency](accuracy_vs_latency.png), "
              "[latency by backend](latency_by_backend.png)", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- plots
def _save_figure(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def _short_backend(backend: str) -> str:
    return backend.replace("openvino-", "ov-").replace("torch-eager", "eager")


def _ok_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report.get("rows") or [] if r.get("status") == "ok"]


def plot_accuracy_vs_latency(report: dict[str, Any], path: str | Path) -> Path:
    """Image AUROC (signal rows: sample AUROC) against p50 latency at the smallest batch size, one labelled marker
    per row."""
    from matplotlib.figure import Figure

    small, _ = _batch_columns(report)
    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    markers = {"torch-eager": "o", "openvino-fp32": "s", "openvino-fp16": "^", "openvino-int8": "D"}
    models = sorted({r["model"] for r in report.get("rows") or []})
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    points = []
    for row in _ok_rows(report):
        auroc = (row.get("quality") or {}).get(_HEADLINE[_modality(row)])
        lat = ((row.get("latency") or {}).get(small) or {}).get("p50_ms")
        if auroc is None or lat is None:
            continue
        points.append(lat)
        ax.scatter([lat], [auroc], marker=markers.get(row["backend"], "o"), color=colours[row["model"]], s=50,
                   label=f"{row['model']} {_short_backend(row['backend'])}")
        ax.annotate(f"{row['model']}/{_short_backend(row['backend'])}", (lat, auroc), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)
    if points:
        if max(points) / max(min(points), 1e-9) > 20:
            ax.set_xscale("log")
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no successful rows", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"p50 latency at batch {small} (ms)")
    modalities = _modalities(report.get("rows") or [])
    ax.set_ylabel(" / ".join(_HEADLINE[m].replace("_", " ") for m in modalities) + " (test)")
    ax.set_title(f"Accuracy vs latency — {(report.get('recipe') or {}).get('name', '')}")
    ax.grid(True, alpha=0.3)
    return _save_figure(fig, Path(path))


def plot_latency_by_backend(report: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars: p50 latency per (model, backend), one bar per batch size."""
    from matplotlib.figure import Figure

    sizes = [str(s) for s in (report.get("recipe") or {}).get("batch_sizes") or [1]]
    rows = _ok_rows(report)
    several_data = len({(r["data"], r.get("category")) for r in rows}) > 1
    fig = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2), 5))
    ax = fig.add_subplot()
    width = 0.8 / max(len(sizes), 1)
    for j, bs in enumerate(sizes):
        xs, heights = [], []
        for i, row in enumerate(rows):
            lat = ((row.get("latency") or {}).get(bs) or {}).get("p50_ms")
            if lat is not None:
                xs.append(i + (j - (len(sizes) - 1) / 2) * width)
                heights.append(lat)
        ax.bar(xs, heights, width=width, label=f"batch {bs}", color=f"C{j}")
    labels = [f"{r['model']}\n{_short_backend(r['backend'])}" + (f"\n{_data_cell(r)}" if several_data else "")
              for r in rows]
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    if not rows:
        ax.text(0.5, 0.5, "no successful rows", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    all_heights = [lat for row in rows for bs in sizes
                   if (lat := ((row.get("latency") or {}).get(bs) or {}).get("p50_ms")) is not None]
    if all_heights and max(all_heights) / max(min(all_heights), 1e-9) > 30:
        ax.set_yscale("log")
    ax.set_ylabel("p50 latency per batch (ms)")
    ax.set_title(f"Latency by model and backend — {(report.get('recipe') or {}).get('name', '')}")
    ax.grid(True, axis="y", alpha=0.3)
    return _save_figure(fig, Path(path))


_PLOTTERS: dict[str, Callable[[dict[str, Any], str | Path], Path]] = {
    "accuracy_vs_latency.png": plot_accuracy_vs_latency,
    "latency_by_backend.png": plot_latency_by_backend,
}


def write_report(report: dict[str, Any], output: str | Path) -> dict[str, Path]:
    """Write bench.json, bench.md and the plots into ``output`` (each file atomically); returns their paths."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": write_json_atomic(out / "bench.json", report),
             "markdown": write_text_atomic(out / "bench.md", render_markdown(report))}
    for name, plot in _PLOTTERS.items():
        files[name] = plot(report, out / name)
    return files


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a bench.json."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
