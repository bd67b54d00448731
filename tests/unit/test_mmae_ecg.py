"""plugin:mmae_ecg: shapes, leak-free masking, complementary inference masks, export, settings, data checks and
a tiny training run that separates PVC-like beats from normal ones."""

from __future__ import annotations

import pytest
import torch

from uad_plugins import create_model
from uad_plugins.data.signals import SignalBatch, synthetic_ecg_windows
from uad_plugins.errors import ConfigError, DataError
from uad_plugins.plugins.mmae_ecg.torch_model import MmaeEcgModel

torch.set_num_threads(2)

TINY = {"n_leads": 2, "length": 64, "segment_len": 8, "local_segment_len": 4, "local_segments": 2,
        "embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_dim": 16, "decoder_heads": 2}


def test_training_and_eval_outputs() -> None:
    model = MmaeEcgModel(**TINY)
    x = torch.randn(5, 2, 64)
    out = model.train()(x)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and out.loss_stats >= 0
    model.eval()
    with torch.no_grad():
        pred = model(x)
    assert pred.pred_score.shape == (5,) and pred.anomaly_map.shape == (5, 2, 64)
    assert bool((pred.anomaly_map >= 0).all())
    assert model.passes_per_sample == 2 * (8 // 2)  # 2 complementary masks x 4 windows


def test_inference_masks_hide_every_segment_and_every_local_token() -> None:
    model = MmaeEcgModel(**TINY)
    hidden = model.eval_hidden  # [P, T]
    assert hidden.shape == (8, 8)
    assert torch.equal(hidden.sum(0), torch.full((8,), 4))  # each segment hidden in 4 of the 8 passes (once per window)
    assert torch.equal(model.eval_count_local, torch.ones(16))  # each local token hidden exactly once
    assert set(hidden.sum(1).tolist()) == {4}  # the same count in every pass (fixed shapes)


@pytest.mark.parametrize("scale", ["global", "local"])
def test_hidden_tokens_never_see_their_own_values(scale: str) -> None:
    """Changing a hidden segment does not change any prediction of it (no view leaks it)."""
    torch.manual_seed(0)
    model = MmaeEcgModel(**TINY).eval()
    x = torch.randn(1, 2, 64)
    hidden = torch.zeros(1, 8, dtype=torch.bool)
    hidden[0, [2, 3, 6, 7]] = True
    window = torch.tensor([2])  # local window over segments 2-3: both hidden
    with torch.no_grad():
        before = model._reconstruct(x, hidden, window, 4, 2 * 2)
        y = x.clone()
        y[..., 16:32] += 5.0 * torch.randn(2, 16)  # segments 2 and 3
        after = model._reconstruct(y, hidden, window, 4, 2 * 2)
    index = 0 if scale == "global" else 1
    pred_b, stats_b, _, hid = before[index]
    pred_a, stats_a, _, _ = after[index]
    assert torch.allclose(pred_b[hid], pred_a[hid], atol=1e-5)
    assert torch.allclose(stats_b[hid], stats_a[hid], atol=1e-5)
    with torch.no_grad():  # sanity: a change of a visible segment does reach the hidden predictions
        z = x.clone()
        z[..., 0:8] += 5.0
        moved = model._reconstruct(z, hidden, window, 4, 2 * 2)[index][0]
    assert not torch.allclose(pred_b[hid], moved[hid], atol=1e-3)


def test_random_training_masks_are_stratified() -> None:
    model = MmaeEcgModel(**{**TINY, "length": 128})  # 16 segments, window of 2
    hidden, window = model._random_masks(64, torch.device("cpu"))
    assert set(hidden.sum(1).tolist()) == {model.hidden_in + model.hidden_out}
    inside = torch.stack([hidden[i, w:w + 2].sum() for i, w in enumerate(window.tolist())])
    assert set(inside.tolist()) == {model.hidden_in}


def test_eval_forward_exports_with_a_dynamic_batch() -> None:
    model = MmaeEcgModel(**TINY).eval()
    x = torch.randn(3, 2, 64)
    batch = torch.export.Dim("batch", min=1, max=256)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    y = torch.randn(5, 2, 64)
    exported = program.module()(y)
    with torch.no_grad():
        eager = model(y)
    assert torch.allclose(exported.pred_score, eager.pred_score, atol=1e-5)
    assert torch.allclose(exported.anomaly_map, eager.anomaly_map, atol=1e-5)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("segment_len", 7, "segment_len=7"),
    ("local_segment_len", 3, "local_segment_len=3"),
    ("local_segments", 3, "local_segments=3"),
    ("inference_masks", 3, "inference_masks=3"),
    ("mask_ratio", 1.0, "mask_ratio=1.0"),
    ("score_space", "raw", "score_space='raw'"),
    ("stats_weight", 0.0, "stats_weight=0.0"),
])
def test_bad_settings_are_config_errors(option: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("plugin:mmae_ecg", **{**TINY, option: value})


def test_lead_count_mismatch_is_a_data_error() -> None:
    model = create_model("plugin:mmae_ecg", **TINY)
    batch = SignalBatch(signal=torch.randn(2, 3, 64))
    with pytest.raises(DataError, match="built for 2 lead"):
        model.validation_step(batch)
    with pytest.raises(DataError, match="windows of 32 samples"):
        model.validation_step(SignalBatch(signal=torch.randn(2, 2, 32)))


def test_tiny_training_separates_pvc_like_beats() -> None:
    """A few hundred steps on procedural beats: the loss falls and PVC-like beats score higher, and the map
    is higher where the beat was changed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster than two on a loaded machine
    try:
        _train_and_score()
    finally:
        torch.set_num_threads(threads)


def _train_and_score() -> None:
    torch.manual_seed(0)
    normal, _ = synthetic_ecg_windows(96, 1, 64, seed=0)
    test_normal, _ = synthetic_ecg_windows(16, 1, 64, seed=1)
    pvc, masks = synthetic_ecg_windows(16, 1, 64, anomalous=True, seed=2)
    model = MmaeEcgModel(n_leads=1, length=64, segment_len=8, local_segment_len=4, local_segments=2, embed_dim=32,
                         depth=2, num_heads=2, decoder_dim=32, decoder_heads=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x = torch.from_numpy(normal * 5.0)
    losses = []
    for _ in range(60):
        for _ in range(0, len(x), 32):
            loss = model.train()(x[torch.randperm(len(x))[:32]]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    model.eval()
    with torch.no_grad():
        good = model(torch.from_numpy(test_normal * 5.0))
        bad = model(torch.from_numpy(pvc * 5.0))
    assert float(bad.pred_score.min()) > float(good.pred_score.median())
    inside = bad.anomaly_map[torch.from_numpy(masks).bool()].mean()
    outside = bad.anomaly_map[~torch.from_numpy(masks).bool()].mean()
    assert inside > 2 * outside


# ------------------------------------------------------------------------------------- defaults from the data
@pytest.mark.parametrize("length", [96, 140])
def test_defaults_fit_windows_of_any_usable_length(length: int, tmp_path) -> None:
    """Regression (issue 14): fitting a 96- or 140-sample dataset with the packaged defaults took one failed run
    per option; now the shape comes from the data and the segment sizes are chosen to fit it."""
    from uad_plugins.data.signals import SignalFolder, make_synthetic_signal_folder
    from uad_plugins.engine import UadEngine, load_model_from_checkpoint

    root = make_synthetic_signal_folder(tmp_path / "data", n_leads=1, length=length, n_train=3, per_file=4,
                                        n_test_normal=2, n_test_anomalous=2)
    datamodule = SignalFolder(root=str(root), normal_dir="train/good", normal_test_dir="test/good",
                              abnormal_dir="test/bad", mask_dir="ground_truth/bad", train_batch_size=4,
                              eval_batch_size=4)
    model = create_model("plugin:mmae_ecg", embed_dim=16, depth=1, decoder_dim=16)  # small, sizes from the data
    engine = UadEngine(default_root_dir=tmp_path / "runs", seed=0, accelerator="cpu", devices=1, max_steps=2,
                       logger=False, enable_progress_bar=False, enable_model_summary=False)
    engine.fit(model=model, datamodule=datamodule)
    assert model.signal_shape == (1, length) and engine.trainer.global_step == 2
    net = model.model
    assert net.length % net.segment_len == 0 and net.segment_len % net.local_segment_len == 0
    reloaded = load_model_from_checkpoint(engine.best_model_path)
    assert reloaded.signal_shape == (1, length) and reloaded.model.segment_len == net.segment_len


def test_sizes_are_chosen_to_fit_and_given_ones_are_kept() -> None:
    from uad_plugins.plugins.mmae_ecg.model import resolve_sizes

    assert resolve_sizes(256, None, None, None, 2)[0] == {"segment_len": 16, "local_segment_len": 4,
                                                          "local_segments": 4}  # the old defaults
    assert resolve_sizes(96, None, None, None, 2)[0] == {"segment_len": 16, "local_segment_len": 4,
                                                         "local_segments": 2}
    assert resolve_sizes(140, None, None, None, 2)[0]["segment_len"] == 14
    sizes, chosen = resolve_sizes(3600, 25, None, None, 2)
    assert sizes["segment_len"] == 25 and "segment_len" not in chosen and 144 % sizes["local_segments"] == 0
    with pytest.raises(ConfigError, match="segment_len=7"):
        create_model("plugin:mmae_ecg", n_leads=1, length=96, segment_len=7)


def test_schedule_is_suggested_in_steps_and_a_length_you_set_wins(tmp_path) -> None:
    model = create_model("plugin:mmae_ecg", **TINY)
    assert model.trainer_arguments["max_steps"] == 3000 and model.trainer_arguments["max_epochs"] == -1
    assert create_model("plugin:mmae_ecg", **TINY, max_epochs=5).trainer_arguments["max_epochs"] == 5
    from uad_plugins.engine import UadEngine

    engine = UadEngine(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=1, logger=False)
    engine._setup_trainer(model)
    assert engine.trainer.max_epochs == 1 and engine.trainer.max_steps == -1


def test_single_scale_ablation_uses_global_segments_only() -> None:
    model = MmaeEcgModel(**{k: v for k, v in TINY.items()}, single_scale=True)
    x = torch.randn(3, 2, 64)
    out = model.train()(x)
    assert float(out.loss_local) == 0.0 and torch.isfinite(out.loss)
    model.eval()
    base = model(x).anomaly_map
    x2 = x.clone()
    x2[..., :8] += 5.0
    assert tuple(base.shape) == (3, 2, 64) and not torch.allclose(model(x2).anomaly_map, base)
