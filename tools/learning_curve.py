"""Learning curve of one model: a checkpoint every N epochs, image and pixel AUROC on VALIDATION data for each
checkpoint, the test split scored for the last checkpoint only (nothing is chosen on test).

    python tools/learning_curve.py --model plugin:uniad --data bottle --epochs 200 --every 20 --output curves/uniad
    python tools/learning_curve.py --model plugin:onenip --data bottle --epochs 200 --every 20 --output curves/onenip
    python tools/learning_curve.py --quick --output /tmp/curve          (tiny model on demo weave: a smoke test)

``--data bottle``: MVTec AD bottle at ../shared/data/mvtec_ad_256; ``--data demo``: the three demo categories in one
unified datamodule; ``--data demo:weave``: one demo category; ``--data-config FILE.yaml``: any ``{class_path,
init_args}``. Validation is the engine's honest split (held-back training normals + synthesized anomalies).
Training goes through ``UadEngine`` (seeded, run folder under ``--output``); checkpoints are rebuilt with
``load_checkpoint``. Models with ``model.component_maps`` (OneNIP) get a pixel AUROC per map as well
(``reconstruction``, ``refiner``, ``fused``). Metrics are computed on raw outputs (ranks), maps resized to the
masks. Writes ``curve.json`` in ``--output`` and prints one line per checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

DATA_ROOT = Path("../shared/data")
#: what --quick changes in the trainer, and how many batches it scores
QUICK_TRAINER = {"limit_train_batches": 2, "limit_val_batches": 2}
QUICK_EVAL_BATCHES = 2


def data_config(name: str, batch_size: int = 8, num_workers: int = 2) -> dict[str, Any]:
    """``{class_path, init_args}`` of a named dataset (``bottle``, ``demo``, ``demo:<category>``)."""
    sizes = {"train_batch_size": batch_size, "eval_batch_size": min(batch_size, 32), "num_workers": num_workers}
    if name == "bottle":
        return {"class_path": "MVTecAD",
                "init_args": {"root": str(DATA_ROOT / "mvtec_ad_256"), "category": "bottle", **sizes}}
    if name == "demo":
        return {"class_path": "UnifiedUadDemo", "init_args": {"categories": "all", **sizes}}
    if name.startswith("demo:"):
        return {"class_path": "UadDemo", "init_args": {"category": name.split(":", 1)[1], **sizes}}
    raise SystemExit(f"unknown --data {name!r}: use bottle, demo, demo:<category> or --data-config FILE")


def auroc(scores: Any, labels: Any) -> float | None:
    """Threshold-free AUROC of raw scores (ties averaged); ``None`` when one class is missing."""
    import numpy as np
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def evaluate(model: Any, loader: Iterable[Any], max_batches: int | None = None) -> dict[str, float | None]:
    """``image_AUROC``, ``pixel_AUROC`` and, for a model with ``component_maps``, ``pixel_AUROC_<map>`` and
    ``image_AUROC_<map>`` per map (image score: the model's own pooling, max of the ``pool_size`` average-pooled
    map, as if that map were the one scored); all on the model's raw outputs over ``loader`` (its first
    ``max_batches`` batches when given). Signal batches (``batch.signal``) go through the model's own validation
    step and give ``sample_AUROC`` and ``point_AUROC`` (raw per-sample maps, no smoothing)."""
    import torch
    import torch.nn.functional as F

    from uad_plugins.components.scoring import max_avgpool_score

    net = model.model
    components = getattr(net, "component_maps", None)
    scores, labels, pixels, masks = [], [], {}, []
    component_scores: dict[str, list[Any]] = {}
    is_signal = False
    model.eval()
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            if getattr(batch, "signal", None) is not None:
                is_signal = True
                out = model.validation_step(batch, index)
                scores.append(out.pred_score.detach().float().cpu().view(-1))
                labels.append(torch.as_tensor(out.gt_label).view(-1).cpu())
                if out.gt_mask is not None and out.anomaly_map is not None:
                    pixels.setdefault("", []).append(out.anomaly_map.detach().float().cpu().flatten())
                    masks.append(torch.as_tensor(out.gt_mask).cpu().flatten() > 0.5)
                continue
            images = model.preprocess(batch.image)
            out = net(images)
            scores.append(out.pred_score.detach().float().cpu().view(-1))
            labels.append(torch.as_tensor(batch.gt_label).view(-1).cpu())
            component = components(images) if callable(components) else {}
            for key, value in component.items():
                component_scores.setdefault(key, []).append(
                    max_avgpool_score(value, net.pool_size).detach().float().cpu().view(-1))
            mask = getattr(batch, "gt_mask", None)
            if mask is None:
                continue
            mask = torch.as_tensor(mask).cpu()
            mask = mask.view(mask.shape[0], 1, *mask.shape[-2:])
            maps = {"": out.anomaly_map, **{f"_{k}": v for k, v in component.items()}}
            for key, value in maps.items():
                resized = F.interpolate(value.detach().float().cpu(), size=mask.shape[-2:], mode="bilinear",
                                        align_corners=False)
                pixels.setdefault(key, []).append(resized.flatten())
            masks.append(mask.flatten() > 0.5)
    whole, local = ("sample", "point") if is_signal else ("image", "pixel")
    result: dict[str, float | None] = {f"{whole}_AUROC": auroc(torch.cat(scores), torch.cat(labels))}
    for key, values in component_scores.items():
        result[f"{whole}_AUROC_{key}"] = auroc(torch.cat(values), torch.cat(labels))
    if masks:
        target = torch.cat(masks)
        for key, values in pixels.items():
            result[f"{local}_AUROC{key}"] = auroc(torch.cat(values), target)
    return result


def _checkpoint_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("epoch=*.ckpt"))


def run_curve(model_reference: str, model_args: Mapping[str, Any], data: Mapping[str, Any], *, epochs: int,
              every: int, output: str | Path, seed: int = 0, trainer: Mapping[str, Any] | None = None,
              eval_batches: int | None = None, log: Any = print) -> dict[str, Any]:
    """Train with a checkpoint every ``every`` epochs (and one at the end), score each on validation, the last on
    test (``eval_batches`` limits both, for smoke tests). Returns (and writes to ``output/curve.json``) the
    settings, the per-checkpoint rows and the test row."""
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from uad_plugins import create_datamodule, create_model
    from uad_plugins.engine.checkpoint import load_checkpoint
    from uad_plugins.engine.engine import UadEngine

    output = Path(output)
    folder = output / "checkpoints"
    model = create_model(model_reference, **dict(model_args))
    datamodule = create_datamodule(dict(data))
    class CurveCheckpoint(ModelCheckpoint):
        """A ``ModelCheckpoint`` with its own state key (the engine keeps its own last-checkpoint callback)."""

        @property
        def state_key(self) -> str:
            return "learning_curve_" + super().state_key

    every_cb = CurveCheckpoint(dirpath=folder, filename="epoch={epoch:04d}", auto_insert_metric_name=False,
                               every_n_epochs=every, save_top_k=-1, save_on_train_epoch_end=False)
    trainer_args = {"max_epochs": epochs, "check_val_every_n_epoch": every, "accelerator": "auto",
                    "enable_progress_bar": False, **dict(trainer or {})}
    engine = UadEngine(callbacks=[every_cb], default_root_dir=output / "runs", seed=seed, heatmaps=False,
                       data_config=dict(data), model_reference=model_reference, **trainer_args)
    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    done = int(engine.trainer.current_epoch)  # epochs completed
    final = folder / f"epoch={done - 1:04d}.ckpt"
    if not final.exists():  # stopped between two checkpoints (max_time, or epochs not a multiple of every)
        engine.trainer.save_checkpoint(final)
    accelerator = str(trainer_args.get("accelerator", "auto"))
    device = "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    rows = []
    val_loader = datamodule.val_dataloader()
    for path in _checkpoint_files(folder):
        loaded, _ = load_checkpoint(path)
        epoch = int(path.stem.split("=")[1]) + 1
        # off the every-N grid (a wall-clock stop) no validation loop ran at this epoch during fit: statistics a
        # model takes from validation (OneNIP's fusion scale) are those of the last one that did
        row = {"epoch": epoch, "in_fit_validation": epoch % every == 0, "checkpoint": str(path),
               **evaluate(loaded.to(device), val_loader, eval_batches)}
        rows.append(row)
        log(f"epoch {epoch:5d}  validation  " + _format(row))
    fitted_on_validation = any(row["in_fit_validation"] for row in rows)
    if not fitted_on_validation:
        log("warning: no validation loop ran during the fit (the time cap or the epochs came first): statistics a "
            "model takes from validation (OneNIP's fusion scale) were never fitted, so maps built on them are void")
    last, _ = load_checkpoint(_checkpoint_files(folder)[-1])
    test = {"epoch": rows[-1]["epoch"], **evaluate(last.to(device), datamodule.test_dataloader(), eval_batches)}
    log(f"epoch {test['epoch']:5d}  TEST (last checkpoint only)  " + _format(test))
    result = {"model": model_reference, "model_args": dict(model_args), "data": dict(data), "seed": seed,
              "trainer": {k: v for k, v in trainer_args.items() if k != "callbacks"},
              "epochs_done": done, "steps_done": int(engine.trainer.global_step),
              "fit_seconds": round(fit_seconds, 1), "validation_statistics_fitted": fitted_on_validation,
              "validation": rows, "test_last": test}
    output.mkdir(parents=True, exist_ok=True)
    (output / "curve.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def _format(row: Mapping[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                     if k not in ("epoch", "checkpoint", "in_fit_validation"))


def quick_settings(model_reference: str) -> dict[str, Any]:
    """The model's tiny contract-test settings (random weights, small input)."""
    from uad_plugins.factory import get_spec

    return dict(get_spec("model", model_reference).test_init_args())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="plugin:uniad", help="model reference (plugin:uniad, plugin:onenip, ...)")
    parser.add_argument("--model-args", default="{}", help="init args as JSON, over the packaged defaults")
    parser.add_argument("--data", default="bottle", help="bottle, demo (unified), demo:<category>")
    parser.add_argument("--data-config", help="a YAML/JSON file holding {class_path, init_args} (wins over --data)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--every", type=int, default=None,
                        help="checkpoint and validation every N epochs (default 20; --quick: 1)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--max-time", help="Lightning max_time, e.g. 00:00:30:00 (the last state is still scored)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="curves/run")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: the model's tiny test settings, demo weave, 2 epochs, every epoch "
                             "unless --every says otherwise")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(min(torch.get_num_threads(), 2) if args.accelerator == "cpu" else torch.get_num_threads())
    model_args = json.loads(args.model_args)
    if args.quick:
        model_args = {**quick_settings(args.model), **model_args}
        args.data, args.epochs, args.batch_size, args.num_workers = "demo:weave", 2, 8, 0
        args.accelerator = "cpu"
    if args.every is None:
        args.every = 1 if args.quick else 20
    if args.data_config:
        import yaml

        data = yaml.safe_load(Path(args.data_config).read_text())
    else:
        data = data_config(args.data, args.batch_size, args.num_workers)
    trainer: dict[str, Any] = {"accelerator": args.accelerator}
    if args.max_time:
        trainer["max_time"] = args.max_time
    if args.quick:
        trainer.update(QUICK_TRAINER)
    run_curve(args.model, model_args, data, epochs=args.epochs, every=args.every, output=args.output,
              seed=args.seed, trainer=trainer, eval_batches=QUICK_EVAL_BATCHES if args.quick else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
