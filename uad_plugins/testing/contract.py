"""The conformance kit: contract checks any model, synthesizer or metric plugin can run against itself.

``run_model_contract`` builds the model from its spec's tiny ``test_config``, fits it for a couple of steps on a
small synthetic MVTec-layout dataset with the real engine (Lightning, CPU), checks what eval-mode prediction
returns, and checks that the checkpoint round-trips to identical predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ContractReport", "check_export_contract", "make_synthetic_image_dataset", "run_metric_contract",
           "run_model_contract", "run_synthesizer_contract"]


def make_synthetic_image_dataset(root: str | Path, *, category: str = "synthetic", n_train: int = 10,
                                 n_test_good: int = 4, n_test_bad: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write a tiny MVTec-layout dataset: smooth textured normals, bright square defects with masks."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(root) / category
    yy, xx = np.mgrid[0:size, 0:size] / size

    def normal() -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi, 3)
        img = 0.5 + 0.2 * np.stack([np.sin(8 * np.pi * xx + p) * np.cos(6 * np.pi * yy) for p in phase], -1)
        img += rng.normal(0, 0.02, img.shape)
        return np.clip(img, 0, 1)

    def save(img: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path)

    for i in range(n_train):
        save(normal(), base / "train" / "good" / f"{i:03d}.png")
    for i in range(n_test_good):
        save(normal(), base / "test" / "good" / f"{i:03d}.png")
    for i in range(n_test_bad):
        img, mask = normal(), np.zeros((size, size), dtype=np.uint8)
        s = max(size // 6, 4)
        y, x = rng.integers(0, size - s, 2)
        img[y:y + s, x:x + s] = [1.0, 0.1, 0.1]
        mask[y:y + s, x:x + s] = 255
        save(img, base / "test" / "defect" / f"{i:03d}.png")
        mask_path = base / "ground_truth" / "defect" / f"{i:03d}_mask.png"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(mask_path)
    return Path(root)


@dataclass
class ContractReport:
    """What the contract run observed (for assertions and for humans)."""

    name: str
    steps: int = 0
    checkpoint: str = ""
    pred_score_shape: tuple[int, ...] = ()
    anomaly_map_shape: tuple[int, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    max_abs_diff_after_reload: float = float("nan")
    parity: dict[str, Any] = field(default_factory=dict)


def run_model_contract(reference: str, workdir: str | Path, *, init_args: dict[str, Any] | None = None,
                       train_batches: int = 2, batch_size: int = 4, export: bool = True) -> ContractReport:
    """Fit, predict and checkpoint-round-trip the model ``reference`` (``plugin:<name>``) on tiny data; for a spec
    tagged ``exportable``, also export to OpenVINO FP32 through the parity gate and run it with the edge runtime.

    Raises ``AssertionError`` with a readable message when the model breaks the contract.
    """
    import torch
    from anomalib.data import MVTecAD

    from uad_plugins.engine import UadEngine, load_model_from_checkpoint
    from uad_plugins.factory import create_model, get_spec

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    workdir = Path(workdir)
    spec = get_spec("model", reference)
    assert spec is not None, f"{reference} is not a registered model"
    args = {**spec.test_init_args(), **dict(init_args or {})}
    model = create_model(reference, **args)
    data_root = make_synthetic_image_dataset(workdir / "data")
    datamodule = MVTecAD(root=data_root, category="synthetic", train_batch_size=batch_size,
                         eval_batch_size=batch_size, num_workers=0, seed=0)
    engine = UadEngine(default_root_dir=workdir / "runs", seed=0, heatmaps=False, accelerator="cpu", devices=1,
                       max_epochs=1, limit_train_batches=train_batches, logger=False, enable_progress_bar=False,
                       enable_model_summary=False, num_sanity_val_steps=0)
    engine.fit(model=model, datamodule=datamodule)
    report = ContractReport(name=spec.name, steps=int(engine.trainer.global_step),
                            checkpoint=str(engine.best_model_path or ""))
    assert report.steps >= 1, f"{reference}: no optimisation step ran"
    assert Path(report.checkpoint).is_file(), f"{reference}: fit wrote no checkpoint"
    results = engine.test(model=model, datamodule=datamodule, verbose=False)
    report.metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}

    batch = next(iter(datamodule.test_dataloader()))
    images = model.pre_processor.transform(batch.image) if model.pre_processor else batch.image
    model.eval()
    with torch.no_grad():
        out = model.model(images)
    assert out.pred_score is not None and out.anomaly_map is not None, f"{reference}: eval forward must return " \
        "pred_score and anomaly_map"
    report.pred_score_shape = tuple(out.pred_score.shape)
    report.anomaly_map_shape = tuple(out.anomaly_map.shape)
    b = images.shape[0]
    assert report.pred_score_shape == (b,), f"{reference}: pred_score shape {report.pred_score_shape}, expected ({b},)"
    amap = out.anomaly_map
    assert amap.shape[0] == b and amap.shape[-2:] == images.shape[-2:], (
        f"{reference}: anomaly_map shape {tuple(amap.shape)} does not match the input {tuple(images.shape)}")
    assert torch.isfinite(out.pred_score).all() and torch.isfinite(amap).all(), f"{reference}: non-finite output"

    reloaded = load_model_from_checkpoint(report.checkpoint).eval()
    with torch.no_grad():
        again = reloaded.model(images)
    report.max_abs_diff_after_reload = float((again.anomaly_map - amap).abs().max())
    assert report.max_abs_diff_after_reload < 1e-5, (
        f"{reference}: predictions change after a checkpoint round trip (max abs diff "
        f"{report.max_abs_diff_after_reload:.3g})")
    if export and "exportable" in spec.tags:
        report.parity = check_export_contract(reference, report.checkpoint, datamodule, workdir / "bundle")
    return report


def check_export_contract(reference: str, checkpoint: str | Path, datamodule: Any, output: Path) -> dict[str, Any]:
    """FP32 OpenVINO export of a trained model's ``checkpoint`` (image or signal), through the export door, passes
    the parity gate on ``datamodule``'s validation set (the fit's), and the edge runtime reproduces the eager
    scores; returns the manifest's parity record."""
    import numpy as np
    import torch

    from uad_edge import load_bundle
    from uad_plugins.engine import load_model_from_checkpoint
    from uad_plugins.export import export_checkpoint, take_samples
    from uad_plugins.export.graph import input_size_of

    bundle = export_checkpoint(checkpoint, output, expected_model=reference, datamodule=datamodule,
                               progress=lambda _: None)
    manifest = bundle.manifest
    assert manifest["parity"]["passed"], f"{reference}: parity gate failed: {manifest['parity']}"
    model = load_model_from_checkpoint(checkpoint).eval()
    validation = take_samples(datamodule.val_data, input_size_of(model), None, source="validation")
    edge = load_bundle(output)
    images = validation.images[:2]
    result = edge.predict(images.numpy())
    with torch.no_grad():
        eager = model(images)
    diff = float(np.abs(result.pred_score - eager.pred_score.numpy()).max())
    assert diff < 1e-3, f"{reference}: edge runtime scores differ from eager by {diff:.3g}"
    return manifest["parity"]


def run_synthesizer_contract(reference: str, *, init_args: dict[str, Any] | None = None, size: int = 64) -> None:
    """An image synthesizer keeps shape and range, marks where it changed, and is reproducible for a seed."""
    import torch

    from uad_plugins.factory import create_synthesizer, get_spec

    spec = get_spec("synthesizer", reference)
    assert spec is not None, f"{reference} is not a registered synthesizer"
    args = {**spec.test_init_args(), **dict(init_args or {})}
    synth = create_synthesizer(reference, **args)
    if synth.modality == "feature":
        _feature_synthesizer_contract(reference, args)
        return
    if synth.modality != "image":
        return  # signals and point clouds have their own contract files (tests/contract/test_<modality>_*.py)
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    out, mask = synth(image, seed=1)
    torch.rand(7)  # disturb the global RNG: a fresh instance must still give the same result
    again, mask2 = create_synthesizer(reference, **args)(image, seed=1)
    assert out.shape == image.shape, f"{reference}: image shape changed to {tuple(out.shape)}"
    assert mask.shape == (1, size, size), f"{reference}: mask shape {tuple(mask.shape)}, expected (1, {size}, {size})"
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0, f"{reference}: values outside [0, 1]"
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}, f"{reference}: mask is not binary"
    assert torch.equal(out, again) and torch.equal(mask, mask2), (
        f"{reference}: two instances with the same arguments differ for the same seed")
    changed = (out - image).abs().amax(0) > 1e-6
    if mask.sum() > 0:
        assert changed[mask[0] > 0].float().mean() > 0.5, f"{reference}: the mask does not mark changed pixels"


def run_metric_contract(reference: str, *, init_args: dict[str, Any] | None = None) -> float:
    """An image metric reads an anomalib ``ImageBatch`` (scores and maps, and the labels and masks thresholded at
    0.5), gives 1.0 for perfect predictions and clearly less for reversed ones after ``reset()`` (AUROC 0, AP and
    F1-max their chance floors, precision/recall/F1 at the threshold 0). Returns the perfect value."""
    import torch
    from anomalib.data import ImageBatch

    from uad_plugins.factory import create_metric

    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1], dtype=torch.bool)
    masks = torch.zeros(len(labels), 32, 32, dtype=torch.bool)
    masks[labels, 8:20, 8:20] = True
    noise = torch.rand(len(labels), 1, 32, 32, generator=g) * 0.1
    image = torch.rand(len(labels), 3, 32, 32, generator=g)

    def batch(good: bool) -> ImageBatch:
        score = labels.float() * 0.8 + 0.1 if good else (~labels).float() * 0.8 + 0.1
        region = masks if good else ~masks
        anomaly_map = region[:, None].float() * 0.8 + noise
        # thresholded fields too (metrics at the chosen threshold read them), at 0.5 as the post-processor sets it
        return ImageBatch(image=image, gt_label=labels, gt_mask=masks, pred_score=score, anomaly_map=anomaly_map,
                          pred_label=score > 0.5, pred_mask=anomaly_map > 0.5)

    metric = create_metric(reference, **dict(init_args or {}))
    metric.update(batch(good=True))
    perfect = float(metric.compute())
    assert abs(perfect - 1.0) < 1e-4, f"{reference} gives {perfect} for perfect predictions, not 1.0"
    metric.reset()
    metric.update(batch(good=False))
    reversed_value = float(metric.compute())
    assert reversed_value < perfect - 0.25, (
        f"{reference} gives {reversed_value} for reversed predictions, hardly less than for perfect ones "
        "(does reset() clear the state?)")
    return perfect


def _feature_synthesizer_contract(reference: str, args: dict[str, Any]) -> None:
    """A feature-map synthesizer refuses use before ``fit``, then keeps shape and dtype, returns a binary
    ``[1, H, W]`` mask, changes nothing outside it, and is reproducible for a seed on a fresh instance."""
    import torch

    from uad_plugins.errors import ConfigError
    from uad_plugins.factory import create_synthesizer

    g = torch.Generator().manual_seed(0)
    normals = torch.randn(8, 6, 10, 12, generator=g)
    target = torch.randn(6, 10, 12, generator=g)
    unfitted = create_synthesizer(reference, **args)
    try:
        unfitted(target, seed=1)
    except ConfigError:
        pass
    else:
        raise AssertionError(f"{reference}: a feature synthesizer used before fit() must raise ConfigError")
    first = create_synthesizer(reference, **args)
    first.fit(normals)
    out, mask = first(target, seed=1)
    torch.rand(7)
    second = create_synthesizer(reference, **args)
    second.fit(normals)
    again, mask2 = second(target, seed=1)
    assert out.shape == target.shape and out.dtype == target.dtype, f"{reference}: shape or dtype changed"
    assert mask.shape == (1, 10, 12), f"{reference}: mask shape {tuple(mask.shape)}, expected (1, 10, 12)"
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}, f"{reference}: mask is not binary"
    assert mask.sum() > 0, f"{reference}: nothing was synthesized"
    assert torch.equal(out, again) and torch.equal(mask, mask2), (
        f"{reference}: two instances fitted on the same data differ for the same seed")
    outside = (mask[0] == 0)
    assert torch.equal(out[:, outside], target[:, outside]), f"{reference}: features changed outside the mask"
