"""Image and pixel AUROC (signals: sample and point AUROC) of checkpoints on their own run's honest
VALIDATION split (held-back training normals + synthetic anomalies, rebuilt from each checkpoint's record exactly as
the fit built it; never test data), computed on raw outputs. For choosing settings between runs without looking at
test results. A model with ``component_maps`` (OneNIP) also gets a pixel AUROC per map.

    python tools/validation_scores.py RUN_A/weights/lightning/model.ckpt RUN_B/... [--json scores.json]
    python tools/validation_scores.py RUN/weights/lightning/model.ckpt --split test    (reporting only)

``--split test`` scores the test split instead, to REPORT a fixed checkpoint (for example OneNIP's three maps of a
benchmarked run); it must never be used to choose between settings.

``--synthesizer REF`` rebuilds the validation anomalies with another synthesizer plugin than the run's. Use it for a
model that trains a supervised head on synthetic anomalies (OneNIP's refiner trains on ``plugin:perlin``, which is
also honest validation's default): validation anomalies from the training synthesizer favour that head.

    python tools/validation_scores.py RUN/weights/lightning/model.ckpt --synthesizer plugin:cutpaste
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def validation_scores(ckpt: str | Path, split: str = "validation",
                      synthesizer: str | None = None) -> dict[str, Any]:
    """``image_AUROC`` and ``pixel_AUROC`` (signals: ``sample_AUROC``, ``point_AUROC``) of one checkpoint on its
    run's validation split (``split="test"``: its test split, for reporting only); ``synthesizer`` replaces the
    run's validation synthesizer."""
    from learning_curve import evaluate

    from uad_plugins.engine.checkpoint import load_checkpoint
    from uad_plugins.engine.engine import UadEngine

    model, record = load_checkpoint(ckpt)
    datamodule = record.build_datamodule()
    with tempfile.TemporaryDirectory(prefix="uad-val-") as tmp:
        engine = UadEngine(default_root_dir=tmp, seed=record.seed, heatmaps=False,
                           honest_validation=record.honest_validation,
                           validation_synthesizer=synthesizer or record.validation_synthesizer,
                           validation_ratio=record.validation_ratio)
        engine.open_run(model, datamodule, run_dir=Path(tmp) / "run")
        stage = "test" if split == "test" else "validate"
        engine.prepare_data(datamodule, stage)
        scores = evaluate(model, datamodule.test_dataloader() if stage == "test" else datamodule.val_dataloader())
    row: dict[str, Any] = {"checkpoint": str(ckpt), "split": split, **scores}
    if synthesizer:
        row["synthesizer"] = synthesizer
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--split", choices=["validation", "test"], default="validation",
                        help="test: report a fixed checkpoint; never choose settings with it")
    parser.add_argument("--synthesizer", default=None,
                        help="validation anomalies from this synthesizer plugin instead of the run's (e.g. "
                             "plugin:cutpaste for a model trained on plugin:perlin anomalies)")
    args = parser.parse_args(argv)
    if args.synthesizer and args.split == "test":
        parser.error("--synthesizer changes the validation anomalies; the test split has real ones")
    import torch

    torch.set_num_threads(2)
    rows = []
    for ckpt in args.checkpoints:
        row = validation_scores(ckpt, args.split, args.synthesizer)
        rows.append(row)
        cells = [f"{value:.4f} {key.replace('_AUROC', '')}" for key, value in row.items()
                 if "_AUROC" in key and value is not None]
        print("  ".join([*cells, str(ckpt)]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
