"""Score checkpoints two ways: on raw outputs (what `uad test` reports) and on the post-processor's normalised,
clamped outputs (what the engine reported before issue 12's fix). Ranks are what AUROC/AUPRO see, so the two agree
unless clamping creates ties between normal and anomalous test images (or pixels).

    python tools/metric_before_after.py --data bottle NAME=CKPT [NAME=CKPT ...]
    python tools/metric_before_after.py --data bsdata NAME=CKPT [NAME=CKPT ...] --output before_after.json

``--data bottle``: MVTec AD bottle at ../shared/data/mvtec_ad_256; ``--data bsdata``: bsdata_pitting at
../shared/data/bsdata_pitting (whole test split in both). Prints one line per checkpoint: the three threshold-free
metrics before -> after, and the share of test scores and pixels that the clamp put at exactly 0 or 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DATA_ROOT = Path("../shared/data")
METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")


def whole_test_split(which: str) -> Any:
    """The whole test split of one of the two datasets of docs/benchmarks.md."""
    if which == "bottle":
        from anomalib.data import MVTecAD

        datamodule = MVTecAD(root=DATA_ROOT / "mvtec_ad_256", category="bottle", num_workers=0)
    else:
        from anomalib.data import Folder

        datamodule = Folder(name="bsdata_pitting", root=DATA_ROOT / "bsdata_pitting", normal_dir="train/good",
                            abnormal_dir="test/pitting", normal_test_dir="test/good",
                            mask_dir="ground_truth/pitting", val_split_mode="none", num_workers=0)
    datamodule.setup("test")
    return datamodule.test_data


def score_both_ways(checkpoint: str, dataset: Any, cache: dict) -> dict[str, Any]:
    """Metrics of one checkpoint on raw and on normalised outputs, and how much the clamp saturated."""
    import torch
    from anomalib.data import InferenceBatch

    from uad_plugins.bench.runner import METRICS as PLUGINS
    from uad_plugins.bench.runner import compute_quality
    from uad_plugins.engine.checkpoint import load_checkpoint
    from uad_plugins.export.graph import RawExportModule, input_size_of
    from uad_plugins.export.samples import take_samples

    model, _ = load_checkpoint(checkpoint)
    model.eval()
    size = tuple(input_size_of(model))
    if size not in cache:
        cache[size] = take_samples(dataset, size, None, source="test")
    test = cache[size]
    raw_forward = RawExportModule(model).eval()
    raw_scores, raw_maps, scores, maps = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(test), 8):
            score, amap = raw_forward(test.images[start:start + 8])
            normalised = model.post_processor(InferenceBatch(pred_score=score, anomaly_map=amap))
            raw_scores.append(score.reshape(-1))
            raw_maps.append(amap.reshape(-1, *size))
            scores.append(normalised.pred_score.reshape(-1))
            maps.append(normalised.anomaly_map.reshape(-1, *size))
    clamped_scores, clamped_maps = torch.cat(scores), torch.cat(maps)
    keep = {name: PLUGINS[name] for name in METRICS}
    before = compute_quality(clamped_scores, clamped_maps, test.labels, test.masks, keep)
    after = compute_quality(torch.cat(raw_scores), torch.cat(raw_maps), test.labels, test.masks, keep)
    saturated = {"scores": float(((clamped_scores <= 0) | (clamped_scores >= 1)).float().mean()),
                 "pixels": float(((clamped_maps <= 0) | (clamped_maps >= 1)).float().mean())}
    return {"before": before, "after": after, "saturated": saturated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("bottle", "bsdata"), required=True)
    parser.add_argument("--output", help="also write the results to this JSON file")
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CKPT")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    dataset = whole_test_split(args.data)
    cache: dict = {}
    results = {}
    for item in args.checkpoints:
        name, _, checkpoint = item.partition("=")
        result = score_both_ways(checkpoint, dataset, cache)
        results[name] = result
        change = ", ".join(f"{m} {result['before'][m]:.3f} -> {result['after'][m]:.3f}" for m in METRICS)
        print(f"{name}: {change}; clamped to 0 or 1: {result['saturated']['scores']:.1%} of scores, "
              f"{result['saturated']['pixels']:.2%} of pixels", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
