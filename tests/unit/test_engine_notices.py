"""What a run prints: progress lines when not on a terminal, no alarming notices for nothing (issue 12)."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from uad_plugins.engine.engine import _LightningNoticeFilter, _no_optimizer_notices
from uad_plugins.engine.progress import LogProgress

torch.set_num_threads(2)


class _Statistics(LightningModule):
    """Learns a mean without an optimizer, as PRADOT, Padim and Patchcore do."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(2))
        self.automatic_optimization = True

    def training_step(self, batch, batch_idx):
        self.mean += batch[0].mean(0)
        return None

    def configure_optimizers(self):
        return None


class _Regression(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=4)


def _trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=tmp_path, **kwargs)


def test_progress_lines_name_epoch_batch_and_loss(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="uad_plugins"):
        _trainer(tmp_path, callbacks=[LogProgress(interval_s=0)]).fit(_Regression(), _loader())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fit:")]
    assert "fit: epoch 1/2, batch 1/3" in lines[0]
    assert any(line.startswith("fit: epoch 2/2, batch 3/3") for line in lines)
    assert all("s/batch" in line for line in lines) and "loss" in lines[-1]


def test_progress_lines_are_rate_limited_but_every_epoch_ends_with_one(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="uad_plugins"):
        _trainer(tmp_path, callbacks=[LogProgress(interval_s=3600)]).fit(_Regression(), _loader())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fit:")]
    assert [line.split(",")[:2] for line in lines] == [["fit: epoch 1/2", " batch 3/3"],
                                                       ["fit: epoch 2/2", " batch 3/3"]]


def test_a_model_without_optimizer_gets_one_plain_line_instead_of_lightning_warnings(tmp_path, caplog) -> None:
    model = _Statistics()
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.INFO, logger="uad_plugins"):
        warnings.simplefilter("always")
        with _no_optimizer_notices(model):
            _trainer(tmp_path).fit(model, _loader())
    texts = [str(w.message) for w in seen]
    assert not [t for t in texts if "returned `None`" in t], texts
    assert any("has no optimizer" in r.getMessage() for r in caplog.records)
    # without the guard Lightning does warn: the test would notice if Lightning stopped (or changed the text)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _trainer(tmp_path).fit(_Statistics(), _loader())
    assert [w for w in seen if "configure_optimizers` returned `None`" in str(w.message)]


def test_a_model_with_an_optimizer_gets_no_such_line(tmp_path, caplog) -> None:
    model = _Regression()
    with caplog.at_level(logging.INFO, logger="uad_plugins"), _no_optimizer_notices(model):
        _trainer(tmp_path).fit(model, _loader())
    assert not any("has no optimizer" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("message", "kept"), [
    ("The following callbacks returned in `LightningModule.configure_callbacks` will override existing callbacks "
     "passed to Trainer: PostProcessor, PreProcessor, RawScoreEvaluator", False),
    ("The following callbacks returned in `LightningModule.configure_callbacks` will override existing callbacks "
     "passed to Trainer: EarlyStopping, PostProcessor", True),
    ("\N{ELECTRIC LIGHT BULB} Tip: For seamless cloud logging, try installing litlogger", False),
    ("GPU available: False, used: False", True),
])
def test_lightning_notices_filter(message: str, kept: bool) -> None:
    record = logging.LogRecord("lightning", logging.INFO, __file__, 1, message, None, None)
    assert _LightningNoticeFilter().filter(record) is kept


def test_backbone_note_is_left_out_when_a_checkpoint_fills_the_weights(caplog) -> None:
    from uad_plugins.components.backbones import create_feature_extractor, weights_from_checkpoint

    with caplog.at_level(logging.INFO):
        create_feature_extractor("tf_efficientnet_lite0", ["blocks.1"], False)
    assert any("without ImageNet weights" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO), weights_from_checkpoint():
        create_feature_extractor("tf_efficientnet_lite0", ["blocks.1"], False)
    assert not any("without ImageNet weights" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("terminal", "user_args", "logs_lines"), [
    (False, {}, True),                              # a log file: lines, no bar
    (True, {}, False),                              # a terminal: Lightning's bar
    (False, {"enable_progress_bar": True}, False),  # the user's choice wins
])
def test_engine_logs_progress_lines_when_output_is_not_a_terminal(tmp_path, monkeypatch, terminal, user_args,
                                                                  logs_lines) -> None:
    from uad_plugins.engine import UadEngine
    from uad_plugins.factory import create_model

    monkeypatch.setattr("uad_plugins.engine.engine.output_is_a_terminal", lambda: terminal)
    model = create_model("plugin:pbas", pretrained=False, image_size=64, pretrain_embed_dimension=64,
                         target_embed_dimension=64, dsc_hidden=32)
    engine = UadEngine(default_root_dir=tmp_path, **user_args)
    engine._setup_trainer(model)
    assert any(isinstance(c, LogProgress) for c in engine.trainer.callbacks) is logs_lines
    assert (engine.trainer.progress_bar_callback is None) is logs_lines


def test_epoch_end_line_times_the_training_batches_not_the_validation(tmp_path, caplog) -> None:
    """Validation runs inside the training epoch; its own timer must not restart the training one."""
    import time as clock

    class Slow(_Regression):
        def training_step(self, batch, batch_idx):
            clock.sleep(0.05)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            return None

    with caplog.at_level(logging.INFO, logger="uad_plugins"):
        _trainer(tmp_path, callbacks=[LogProgress(interval_s=3600)], num_sanity_val_steps=0).fit(
            Slow(), _loader(), _loader())
    last = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fit:")][-1]
    assert float(last.split(", ")[2].split(" ")[0]) >= 0.04, last  # s/batch of the training steps
