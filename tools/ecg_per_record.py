"""Sample AUROC of signal models on the MIT-BIH window protocol, pooled and **within each test record** (PVC
windows against the PVC-free windows of the same patient). It checks one reading of the protocol's below-chance
pooled numbers: that a window's score says more about whose heart it is than about whether it holds a PVC.

    python tools/ecg_per_record.py --models plugin:signal_mean_distance plugin:signal_std plugin:signal_nearest
    python tools/ecg_per_record.py --checkpoints bench_results/mmae_ecg_single_scale/checkpoints/*.ckpt
    python tools/ecg_per_record.py --data mitbih_ecgad_minmax --models plugin:signal_std    (ECGAD's scaling)

Baselines are fitted here (seconds; the recipe's seed and data); checkpoints are scored as they are. The data are
a ``MitBihWindows`` entry of ``configs/bench/mmae_ecg_protocol.yaml`` (``--data``, default its first,
``mitbih_record``). This is an analysis of the test split, not
a way to choose settings: nothing here feeds back into a recipe or a default.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import auroc  # the one rank AUROC of tools/ (ties averaged, None without a class)

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "configs" / "bench" / "mmae_ecg_protocol.yaml"


def per_record(scores: np.ndarray, labels: np.ndarray, records: Sequence[str]) -> dict[str, Any]:
    """Pooled AUROC and, per record, its window counts, its AUROC and its median score."""
    names = np.asarray(records)
    rows = {}
    for name in sorted(set(records)):
        keep = names == name
        rows[name] = {"windows": int(keep.sum()), "pvc_windows": int(labels[keep].sum()),
                      "auroc": auroc(scores[keep], labels[keep]), "median_score": float(np.median(scores[keep]))}
    return {"pooled_auroc": auroc(scores, labels), "records": rows}


def datamodule(name: str | None = None) -> Any:
    """The recipe's data entry ``name`` (default: its first) as a datamodule."""
    from uad_plugins.bench.recipe import load_recipe
    from uad_plugins.factory import create_datamodule

    recipe = load_recipe(RECIPE, cwd=REPO)
    entry = recipe.with_data([name]).data[0] if name else recipe.data[0]
    return create_datamodule(entry.class_path, **entry.init_args)


def test_scores(model: Any, dm: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Raw scores, labels and record names of every test window, in order."""
    import torch

    scores, labels, records = [], [], []
    model.eval()
    with torch.no_grad():
        for index, batch in enumerate(dm.test_dataloader()):
            out = model.test_step(batch, index)
            scores.append(out.pred_score.detach().float().cpu().numpy().reshape(-1))
            labels.append(np.asarray(batch.gt_label).reshape(-1))
            records.extend(batch.record)
    return np.concatenate(scores), np.concatenate(labels).astype(int), records


def fitted(reference: str, root: Path, data: str | None = None) -> Any:
    from uad_plugins.engine.engine import UadEngine
    from uad_plugins.factory import create_model

    dm = datamodule(data)
    model = create_model(reference)
    engine = UadEngine(default_root_dir=str(root), seed=0, heatmaps=False)
    engine.fit(model, datamodule=dm)
    return model, dm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=[], help="signal baselines to fit and score")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="trained checkpoints to score")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--data", default=None, help="the recipe's data entry (default: its first, mitbih_record)")
    args = parser.parse_args(argv)
    import torch

    from uad_plugins.engine.checkpoint import load_checkpoint

    torch.set_num_threads(2)
    results = {}
    with tempfile.TemporaryDirectory(prefix="uad-ecg-") as tmp:
        for reference in args.models:
            model, dm = fitted(reference, Path(tmp), args.data)
            dm.setup("test")
            results[reference] = per_record(*test_scores(model, dm))
        for ckpt in args.checkpoints:
            model, _ = load_checkpoint(ckpt)
            dm = datamodule(args.data)
            dm.setup("test")
            results[str(ckpt)] = per_record(*test_scores(model, dm))
    for name, result in results.items():
        cells = ", ".join(f"{rec} {row['pvc_windows']}/{row['windows']} "
                          f"{'n/a' if row['auroc'] is None else format(row['auroc'], '.3f')} "
                          f"(median {row['median_score']:.3g})" for rec, row in result["records"].items())
        print(f"{name}: pooled {result['pooled_auroc']:.3f}; {cells}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
