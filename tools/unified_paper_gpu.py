"""One command, one GPU, under 10 minutes: UniAD and OneNIP with the papers' training protocol on MVTec AD bottle and
on the three demo categories unified, each as a learning curve (validation AUROC per checkpoint, the test split
for the last checkpoint only).

    python tools/unified_paper_gpu.py                        (from the repository root; needs ../shared/data)
    python tools/unified_paper_gpu.py --budget-minutes 9 --output results/unified_paper_gpu
    python tools/unified_paper_gpu.py --quick --output /tmp/paper_quick      (CPU smoke test: tiny models, seconds)

The papers' protocol (UniAD, You et al. 2022; OneNIP, Gao 2024): 224 px, batch 64, AdamW lr 1e-4 and weight decay
1e-4, learning rate x0.1 at 80 % of training, max-norm gradient clipping 0.1, 1000 epochs (all the plugins'
defaults but the batch and the epoch count). What differs, on purpose: the backbone is EfficientNet-Lite0 with its
offline ImageNet weights (the papers' EfficientNet-B4 weights cannot be had on the lent machine), training is one
category (bottle) or three (demo) rather than MVTec AD's 15, and each run is stopped by a wall-clock cap
(``--budget-minutes`` shared by the four runs) if 1000 epochs do not fit: ``epochs_done``/``steps_done`` in the
summary say how far it got (the x0.1 step then never happens; a last checkpoint off the 25-epoch grid keeps the
validation statistics, OneNIP's fusion scale, of the last in-fit validation). Nothing is chosen on the test split.
Writes ``<output>/<model>_<data>/curve.json`` per run and ``<output>/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import learning_curve  # the sibling tool

MODELS = ("plugin:uniad", "plugin:onenip")
DATASETS = ("bottle", "demo")
#: the papers' schedule and batch (their other settings are the plugins' defaults)
PAPER = {"epochs": 1000, "every": 25, "batch_size": 64}


def plan(quick: bool) -> list[dict[str, Any]]:
    """The runs: every model on every dataset (``--quick``: tiny models on demo weave, 1 epoch)."""
    runs = []
    for model in MODELS:
        name = model.split(":")[-1]
        if quick:
            runs.append({"name": f"{name}_quick", "model": model, "model_args": learning_curve.quick_settings(model),
                         "data": learning_curve.data_config("demo:weave", 8, 0), "epochs": 1, "every": 1})
            continue
        for data in DATASETS:
            runs.append({"name": f"{name}_{data}", "model": model,
                         "model_args": {"backbone": "tf_efficientnet_lite0", "pretrained": True, "image_size": 224},
                         "data": learning_curve.data_config(data, PAPER["batch_size"], 8),
                         "epochs": PAPER["epochs"], "every": PAPER["every"]})
    return runs


def _time_cap(seconds: float) -> str:
    seconds = max(int(seconds), 30)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def summary(results: Sequence[dict[str, Any]], total_seconds: float) -> str:
    """A Markdown table: one row per run, the last validation row and the test row of the last checkpoint."""
    lines = ["| run | epochs | steps | fit s | val image AUROC | val pixel AUROC | test image AUROC | "
             "test pixel AUROC | test pixel AUROC rec / ref / fused |", "|---|---|---|---|---|---|---|---|---|"]

    def f(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else "—"

    for name, result in results:
        val, test = result["validation"][-1], result["test_last"]
        parts = " / ".join(f(test.get(f"pixel_AUROC_{k}")) for k in ("reconstruction", "refiner", "fused"))
        lines.append(f"| {name} | {result['epochs_done']} | {result['steps_done']} | {result['fit_seconds']} | "
                     f"{f(val.get('image_AUROC'))} | {f(val.get('pixel_AUROC'))} | {f(test.get('image_AUROC'))} | "
                     f"{f(test.get('pixel_AUROC'))} | {parts if 'pixel_AUROC_fused' in test else '—'} |")
    lines.append(f"\nTotal wall time {total_seconds:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="results/unified_paper_gpu")
    parser.add_argument("--budget-minutes", type=float, default=9.0,
                        help="wall-clock budget of all runs together; training of each run is capped at 70 %% "
                        "of its share (the rest is start-up and scoring)")
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--quick", action="store_true", help="CPU smoke test with tiny models")
    args = parser.parse_args(argv)
    runs = plan(args.quick)
    share = args.budget_minutes * 60 / len(runs)
    start = time.perf_counter()
    results = []
    for run in runs:
        trainer: dict[str, Any] = {"accelerator": "cpu" if args.quick else args.accelerator}
        if args.quick:
            trainer.update(learning_curve.QUICK_TRAINER)
        else:
            trainer["max_time"] = _time_cap(0.7 * share)
        print(f"== {run['name']}: {run['model']} on {run['data']['class_path']}", flush=True)
        result = learning_curve.run_curve(
            run["model"], run["model_args"], run["data"], epochs=run["epochs"], every=run["every"],
            output=Path(args.output) / run["name"], trainer=trainer,
            eval_batches=learning_curve.QUICK_EVAL_BATCHES if args.quick else None)
        results.append((run["name"], result))
    text = summary(results, time.perf_counter() - start)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "summary.md").write_text(text)
    (Path(args.output) / "summary.json").write_text(json.dumps(dict(results), indent=2, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
