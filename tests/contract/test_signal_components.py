"""Every registered component tagged ``signal`` honours the signal contract (new plugins are covered automatically).

Models: a tiny fit through the real engine on procedural ECG windows, eval shapes ``pred_score [B]`` and
``anomaly_map [B, K, Q]``, an identical checkpoint round trip, and (``exportable``) a ``torch.export`` trace with a
dynamic batch plus a real OpenVINO FP32 export through the parity gate, replayed by the edge runtime.
Synthesizers: shape, binary non-empty mask, determinism for a seed. Metrics: perfect predictions
score 1.0 on a ``SignalBatch``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uad_plugins import create_metric, create_model, create_synthesizer, list_components

torch.set_num_threads(2)

MODELS = [s.reference for s in list_components("model") if "signal" in s.tags]
SYNTHESIZERS = [s.reference for s in list_components("synthesizer") if "signal" in s.tags]
METRICS = [s.reference for s in list_components("metric") if "signal" in s.tags]


def test_the_builtin_signal_components_are_registered() -> None:
    assert "plugin:mmae_ecg" in MODELS and "plugin:ecg_anomaly" in SYNTHESIZERS
    assert {"plugin:signal_auroc", "plugin:signal_ap", "plugin:signal_point_auroc"} <= set(METRICS)


@pytest.mark.slow
@pytest.mark.parametrize("reference", MODELS)
def test_signal_model_contract(reference: str, tmp_path: Path) -> None:
    from uad_plugins import get_spec
    from uad_plugins.data.signals import SignalFolder, make_synthetic_signal_folder
    from uad_plugins.engine import UadEngine, load_model_from_checkpoint

    spec = get_spec("model", reference)
    model = create_model(reference, **spec.test_init_args())
    assert model.modality == "signal"
    n_leads, length = model.signal_shape
    root = make_synthetic_signal_folder(tmp_path / "data", n_leads=n_leads, length=length, n_train=3, per_file=6,
                                        n_test_normal=4, n_test_anomalous=4)
    datamodule = SignalFolder(root=str(root), normal_dir="train/good", normal_test_dir="test/good",
                              abnormal_dir="test/bad", mask_dir="ground_truth/bad", n_leads=n_leads,
                              train_batch_size=4, eval_batch_size=4)
    engine = UadEngine(default_root_dir=tmp_path / "runs", seed=0, accelerator="cpu", devices=1, max_epochs=1,
                       limit_train_batches=2, logger=False, enable_progress_bar=False, enable_model_summary=False)
    engine.fit(model=model, datamodule=datamodule)
    assert engine.trainer.global_step >= 1 and Path(engine.best_model_path).is_file()
    assert engine.run_info["validation"]["mode"] == "synthetic" and engine.run_info["validation"]["by"] == "records"
    results = engine.test(model=model, datamodule=datamodule, verbose=False)
    assert {"sample_AUROC", "sample_AP", "point_AUROC"} <= set(results[0])
    assert list((engine.run_dir / "images").rglob("*.png")), "no signal plots were written"

    batch = next(iter(datamodule.test_dataloader()))
    model.eval()
    with torch.no_grad():
        out = model.model(batch.signal)
    b = batch.signal.shape[0]
    assert tuple(out.pred_score.shape) == (b,) and tuple(out.anomaly_map.shape) == tuple(batch.signal.shape)
    assert torch.isfinite(out.pred_score).all() and torch.isfinite(out.anomaly_map).all()
    reloaded = load_model_from_checkpoint(engine.best_model_path).eval()
    with torch.no_grad():
        again = reloaded.model(batch.signal)
    assert float((again.anomaly_map - out.anomaly_map).abs().max()) < 1e-5
    if "exportable" in spec.tags:
        dim = torch.export.Dim("batch", min=1, max=1024)
        program = torch.export.export(reloaded.model, (batch.signal,), dynamic_shapes={"x": {0: dim}})
        traced = program.module()(batch.signal[:3])
        assert torch.allclose(traced.pred_score, again.pred_score[:3], atol=1e-4)
        assert tuple(traced.anomaly_map.shape) == (3, n_leads, length)
        from uad_edge import load_bundle
        from uad_plugins.testing import check_export_contract

        parity = check_export_contract(reference, engine.best_model_path, datamodule, tmp_path / "bundle")
        assert parity["passed"] and load_bundle(tmp_path / "bundle").manifest["modality"] == "signal"


@pytest.mark.parametrize("reference", SYNTHESIZERS)
def test_signal_synthesizer_contract(reference: str) -> None:
    from uad_plugins import get_spec
    from uad_plugins.data.signals import synthetic_ecg_windows

    args = get_spec("synthesizer", reference).test_init_args()
    synth = create_synthesizer(reference, **args)
    assert synth.modality == "signal"
    x = torch.from_numpy(synthetic_ecg_windows(1, 3, 128, seed=0)[0][0])
    out, mask = synth(x, seed=1)
    torch.rand(3)
    again, mask2 = create_synthesizer(reference, **args)(x, seed=1)
    assert out.shape == x.shape and mask.shape == x.shape
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0} and mask.sum() > 0
    assert torch.equal(out, again) and torch.equal(mask, mask2)
    assert torch.isfinite(out).all()
    assert (out - x).abs()[mask > 0].mean() > (out - x).abs()[mask == 0].mean() if (mask == 0).any() else True


@pytest.mark.parametrize("reference", METRICS)
def test_signal_metric_contract(reference: str) -> None:
    """Perfect predictions score 1.0."""
    from uad_plugins.data.signals import SignalBatch

    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 0, 1], dtype=torch.bool)
    masks = torch.zeros(6, 2, 64, dtype=torch.bool)
    masks[labels, :, 20:40] = True
    noise = torch.rand(6, 2, 64, generator=g) * 0.1
    perfect = SignalBatch(signal=torch.randn(6, 2, 64, generator=g), gt_label=labels, gt_mask=masks,
                          pred_score=labels.float() * 5.0 + 1.0, anomaly_map=masks.float() * 5.0 + noise)
    metric = create_metric(reference)
    metric.update(perfect)
    value = float(metric.compute())
    assert value == pytest.approx(1.0, abs=1e-4), f"{reference} gives {value} for perfect predictions"
