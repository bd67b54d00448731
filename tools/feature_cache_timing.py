"""Epoch times with and without the frozen-feature cache, in one process (the numbers of docs/usage.md).

    nice -n 5 python tools/feature_cache_timing.py --models pradot pbas --epochs 3 --limit_train_batches 20

Trains each model on the bsdata_pitting *training* split only (../shared/data/bsdata_pitting/train/good, 1130x460
JPEG read by anomalib's Folder; no validation, no test: no test label is read) with its bsdata recipe's settings
(configs/<model>_bsdata_lite0.yaml: Lite0 ImageNet weights, batch 8), once without the cache and once with
``feature_cache="memory"``, and prints per epoch: the wall time, the part spent waiting for batches (JPEG decoding,
resizing and collating in the data loader), and for PBAS the centre-initialisation pass before epoch 1. It also
times one pass of the data loader alone and one of the backbone alone over the pre-processed images. Shared
cores give noisy absolute times: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

DATA = Path("../shared/data/bsdata_pitting")
SETTINGS: dict[str, dict[str, Any]] = {
    "pbas": {"backbone": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "image_size": 256},
    "pradot": {"backbone": "tf_efficientnet_lite0", "layers": ["blocks.4"], "image_size": 224},
}


def train_split() -> Any:
    """bsdata's training normals only (no validation or test split)."""
    from uad_plugins.factory import create_datamodule

    return create_datamodule({"class_path": "Folder", "init_args": {
        "name": "bsdata_pitting", "root": str(DATA), "normal_dir": "train/good", "train_batch_size": 8,
        "eval_batch_size": 8, "test_split_mode": "none", "val_split_mode": "none"}})


class EpochClock:
    """Wall time of each epoch, the time spent waiting for batches, and the time from fit start to epoch 1."""

    def __init__(self) -> None:
        from lightning.pytorch import Callback

        clock = self

        class _Callback(Callback):
            def on_train_start(self, trainer: Any, module: Any) -> None:
                clock.start = time.perf_counter()

            def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
                now = time.perf_counter()
                if not clock.epochs:
                    clock.before_first = now - clock.start
                clock.epoch_start = clock.last = now
                clock.wait = 0.0

            def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
                clock.wait += time.perf_counter() - clock.last

            def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
                clock.last = time.perf_counter()

            def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
                clock.epochs.append({"seconds": round(time.perf_counter() - clock.epoch_start, 2),
                                     "waiting_for_batches": round(clock.wait, 2)})

        self.callback = _Callback()
        self.epochs: list[dict[str, float]] = []
        self.start = self.epoch_start = self.last = self.wait = self.before_first = 0.0


def fit(name: str, cache: str | None, epochs: int, root: Path, limit: int | None) -> dict[str, Any]:
    """One fit; its epoch times and the cache's counters."""
    import torch

    from uad_plugins.engine import UadEngine
    from uad_plugins.factory import create_model

    torch.manual_seed(0)
    model = create_model(f"plugin:{name}", **SETTINGS[name])
    clock = EpochClock()
    engine = UadEngine(default_root_dir=root, seed=0, heatmaps=False, honest_validation=False, accelerator="cpu",
                       devices=1, max_epochs=epochs, limit_val_batches=0, logger=False, enable_progress_bar=False,
                       enable_model_summary=False, callbacks=[clock.callback], limit_train_batches=limit,
                       feature_cache=cache)
    start = time.perf_counter()
    engine.fit(model=model, datamodule=train_split())
    return {"model": name, "cache": cache, "fit_seconds": round(time.perf_counter() - start, 2),
            "before_epoch_1": round(clock.before_first, 2), "epochs": clock.epochs,
            "feature_cache": engine.run_info.get("feature_cache")}


def loader_and_backbone(name: str) -> dict[str, Any]:
    """One pass of the training loader alone, then one of the backbone alone over its pre-processed batches."""
    import torch

    from uad_plugins.factory import create_model

    model = create_model(f"plugin:{name}", **SETTINGS[name])
    datamodule = train_split()
    datamodule.setup("fit")
    resize = model.pre_processor.transform.transforms[0]
    datamodule.train_data.augmentations = resize  # what the engine's datamodule does (anomalib appends the resize)
    start = time.perf_counter()
    batches = [model.preprocess(batch.image) for batch in datamodule.train_dataloader()]
    loading = time.perf_counter() - start
    extractor = model.frozen_feature_modules()[0]
    start = time.perf_counter()
    with torch.no_grad():
        for images in batches:
            extractor(images)
    backbone = time.perf_counter() - start
    return {"model": name, "images": sum(len(b) for b in batches), "loader_pass_seconds": round(loading, 2),
            "backbone_pass_seconds": round(backbone, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit_train_batches", type=int, default=None,
                        help="batches of 8 per epoch (default: all 69); PBAS's centre pass still reads them all")
    parser.add_argument("--skip_passes", action="store_true", help="leave out the loader-alone / backbone-alone pass")
    parser.add_argument("--root", default="results/feature_cache_timing")
    parser.add_argument("--output", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results: list[dict[str, Any]] = []
    for name in args.models:
        if not args.skip_passes:
            results.append(loader_and_backbone(name))
            print(json.dumps(results[-1]), flush=True)
        for cache in (None, "memory"):
            results.append(fit(name, cache, args.epochs, Path(args.root), args.limit_train_batches))
            print(json.dumps(results[-1]), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
