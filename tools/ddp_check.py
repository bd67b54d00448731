"""Each model trained in one process and in N DDP processes (Lightning's own launcher, CPU + gloo, or GPUs) through
``uad fit``, same seed and data: run folders made, test metrics, wall time, side by side.

    python tools/ddp_check.py --models pbas pradot --processes 2 --output /tmp/ddp
    python tools/ddp_check.py --models pbas --tiny false --data-args --data MVTecAD --data.root \\
        ../shared/data/mvtec_ad_256 --data.category bottle --epochs 3

``--tiny true`` (default) uses each model's contract-test settings (random weights, 64 px) on the demo washer. Prints
one line per model and writes ``ddp_check.json`` in ``--output``. The DDP fit must leave exactly one run folder with
one checkpoint, and its test covers every test image once (one heatmap per image).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = ["--data.category", "washer"]


def fit_command(model: str, processes: int, root: Path, *, tiny: bool = True, epochs: int = 1,
                data_args: list[str] | None = None, extra: list[str] | None = None, batch: int = 8) -> list[str]:
    """The ``uad fit`` command line of one run (``processes`` > 1: DDP on CPU with Lightning's launcher). Every
    run has the same global batch ``batch``: each of N processes takes ``batch / N`` images per step, so one
    process and N processes take the same number of optimiser steps over the same images."""
    if batch % processes:
        raise ValueError(f"--batch {batch} is not a multiple of {processes} processes")
    argv = [sys.executable, "-m", "uad_plugins", "fit", "--model", f"plugin:{model}"]
    if tiny:
        from uad_plugins.factory import get_spec

        for key, value in get_spec("model", f"plugin:{model}").test_config.items():
            argv += [f"--model.{key}", value if isinstance(value, str) else json.dumps(value)]
    argv += ["--trainer.max_epochs", str(epochs), "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false", "--default_root_dir", str(root),
             *(data_args if data_args is not None else DEFAULT_DATA), "--data.train_batch_size",
             str(batch // processes), *(extra or [])]
    if processes > 1:
        argv += ["--trainer.accelerator", "cpu", "--trainer.devices", str(processes), "--trainer.strategy", "ddp"]
    return argv


def run_fit(model: str, processes: int, root: Path, **kwargs: Any) -> dict[str, Any]:
    """Run one fit; its exit status, wall time, run folders, metrics.json and heatmap count."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(fit_command(model, processes, root, **kwargs), capture_output=True, text=True, env=env,
                          timeout=1800)
    seconds = time.perf_counter() - start
    runs = sorted(p for p in root.rglob("v*") if p.is_dir() and (p / "plugins.json").is_file())
    result: dict[str, Any] = {"model": model, "processes": processes, "returncode": proc.returncode,
                              "seconds": round(seconds, 1), "run_folders": [str(r) for r in runs]}
    if proc.returncode != 0:
        result["error"] = (proc.stderr or proc.stdout)[-1500:]
        return result
    if len(runs) == 1:
        run = runs[0]
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        result.update(test=metrics.get("test", {}), steps=metrics.get("steps"), epochs=metrics.get("epochs"),
                      recorded_processes=metrics.get("processes", 1),
                      checkpoints=[str(p.relative_to(run)) for p in run.rglob("*.ckpt")],
                      heatmaps=len(list((run / "images").rglob("*.png"))) if (run / "images").is_dir() else 0)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pbas", "pradot"])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8, help="global training batch (split over the processes)")
    parser.add_argument("--tiny", type=lambda v: v.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--data-args", nargs=argparse.REMAINDER, default=None,
                        help="the rest of the line: uad fit's data options (default: the demo washer)")
    args = parser.parse_args(argv)
    rows = []
    for model in args.models:
        for processes in (1, args.processes):
            root = args.output / model / f"p{processes}"
            row = run_fit(model, processes, root, tiny=args.tiny, epochs=args.epochs, data_args=args.data_args,
                          batch=args.batch)
            rows.append(row)
            test = row.get("test", {})
            print(f"{model:8s} processes={processes} rc={row['returncode']} {row['seconds']:7.1f} s "
                  f"runs={len(row['run_folders'])} steps={row.get('steps')} heatmaps={row.get('heatmaps')} "
                  f"image_AUROC={test.get('image_AUROC', float('nan')):.4f} "
                  f"pixel_AUROC={test.get('pixel_AUROC', float('nan')):.4f}"
                  + (f"\n  error: {row['error'].strip().splitlines()[-1]}" if "error" in row else ""), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "ddp_check.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
