"""Schedules in optimiser steps and stopping when the validation normals' scores stop changing (issue 15).

Real Lightning fits through ``UadEngine`` on a tiny model whose validation scores are known in closed form: after
``t`` optimiser steps every score is ``base * (1 + 2**-t)`` (or a score that never settles), so when training must
stop is computable.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from anomalib.data import ImageBatch
from torch.utils.data import DataLoader

from uad_plugins.components.lightning import UadModule
from uad_plugins.engine import UadEngine
from uad_plugins.engine.stopping import StopWhenStable, score_change
from uad_plugins.errors import ConfigError

torch.set_num_threads(2)

BATCHES_PER_EPOCH = 3


class SettlingScore(UadModule):
    """Score = image mean x (1 + 2**-steps) (``settles=False``: x (1 + (-1)**steps), which never settles).

    One SGD step per batch on a dummy parameter, so Lightning counts optimiser steps."""

    def __init__(self, settles: bool = True, max_epochs: int | None = 50, max_steps: int | None = None) -> None:
        super().__init__(pre_processor=False, post_processor=True, evaluator=False, visualizer=False)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.settles = settles
        self.suggested_max_epochs, self.suggested_max_steps = max_epochs, max_steps
        self.steps_done = 0

    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.steps_done += 1
        return (self.weight - 1.0).pow(2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.weight], lr=0.1)

    def validation_step(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        t = self.steps_done
        scale = 1.0 + (2.0 ** -t if self.settles else (-1.0) ** t)
        return batch.update(pred_score=scale * batch.image.mean(dim=(1, 2, 3)), anomaly_map=batch.image.mean(dim=1))


def _batch(seed: int, labels: list[int]) -> ImageBatch:
    gen = torch.Generator().manual_seed(seed)
    level = 0.2 + 0.6 * torch.rand(len(labels), generator=gen)
    image = level[:, None, None, None].expand(len(labels), 3, 8, 8).clone()
    return ImageBatch(image=image, gt_label=torch.tensor(labels).bool(),
                      gt_mask=torch.zeros(len(labels), 8, 8, dtype=torch.bool))


def _loaders() -> tuple[DataLoader, DataLoader]:
    train = [_batch(i, [0] * 4) for i in range(BATCHES_PER_EPOCH)]
    val = [_batch(10 + i, [0, 0, 0, 1]) for i in range(2)]
    return (DataLoader(train, batch_size=None, collate_fn=lambda b: b),
            DataLoader(val, batch_size=None, collate_fn=lambda b: b))


def _fit(tmp_path: Path, model: SettlingScore, **engine_args: Any) -> UadEngine:
    engine = UadEngine(default_root_dir=tmp_path, heatmaps=False, enable_progress_bar=False,
                       enable_model_summary=False, logger=False, accelerator="cpu", devices=1, **engine_args)
    train, val = _loaders()
    engine.fit(model=model, train_dataloaders=train, val_dataloaders=val)
    return engine


# ---------------------------------------------------------------------------------------------- suggestions
def test_suggested_schedule_in_steps_epochs_or_both() -> None:
    assert SettlingScore(max_epochs=10, max_steps=None).trainer_arguments == {"num_sanity_val_steps": 0,
                                                                               "max_epochs": 10}
    assert SettlingScore(max_epochs=None, max_steps=40).trainer_arguments == {"num_sanity_val_steps": 0,
                                                                               "max_steps": 40, "max_epochs": -1}
    assert SettlingScore(max_epochs=10, max_steps=40).trainer_arguments == {"num_sanity_val_steps": 0,
                                                                             "max_steps": 40, "max_epochs": 10}


@pytest.mark.parametrize(("max_epochs", "max_steps", "steps"), [(10, 4, 4), (1, 100, BATCHES_PER_EPOCH),
                                                                 (None, 5, 5)])
def test_whichever_bound_comes_first_ends_training(tmp_path: Path, max_epochs: int | None, max_steps: int,
                                                   steps: int) -> None:
    """A step cap ends a long epoch schedule on a large dataset; the epochs end it on a small one."""
    engine = _fit(tmp_path, SettlingScore(max_epochs=max_epochs, max_steps=max_steps))
    assert engine.run_info["steps"] == steps


def test_a_length_you_set_voids_both_suggestions(tmp_path: Path) -> None:
    engine = _fit(tmp_path, SettlingScore(max_epochs=10, max_steps=4), max_epochs=2)
    assert engine.run_info["steps"] == 2 * BATCHES_PER_EPOCH


@pytest.mark.parametrize("name", ["pbas", "pradot", "hetnet", "uniad", "onenip"])
def test_image_models_suggest_a_step_cap_and_refuse_no_bound(name: str) -> None:
    from uad_plugins.factory import create_model, get_spec

    defaults = get_spec("model", f"plugin:{name}").default_init_args()
    assert defaults["max_steps"] > 0 and defaults["max_epochs"] > 0
    with pytest.raises(ConfigError, match="max_steps"):
        create_model(f"plugin:{name}", pretrained=False, max_epochs=None, max_steps=None)
    with pytest.raises(ConfigError, match="max_steps"):
        create_model(f"plugin:{name}", pretrained=False, max_steps=0)


# ---------------------------------------------------------------------------------------------- stop when stable
def test_score_change_is_scale_free() -> None:
    previous = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert score_change(previous, previous) == 0.0
    assert score_change(previous, previous + 0.5) == pytest.approx(0.5)  # MAD of 1..5 is 1
    assert score_change(100 * previous, 100 * previous + 50) == pytest.approx(0.5)


def test_stops_once_the_normals_scores_settle(tmp_path: Path) -> None:
    engine = _fit(tmp_path, SettlingScore(max_epochs=50), stop_when_stable=0.05)
    record = engine.run_info["stop_when_stable"]
    # change after t steps ~ 2**-t * median|base| / MAD(base): below 0.05 from about t = 7 (3 steps per epoch)
    assert record["stopped_at_step"] is not None and record["stopped_at_step"] < 6 * BATCHES_PER_EPOCH
    assert engine.run_info["steps"] == record["stopped_at_step"]
    changes = [p["change"] for p in record["passes"]]
    assert changes == sorted(changes, reverse=True) and changes[-1] < 0.05 and changes[-2] < 0.05
    written = json.loads((engine.run_dir / "metrics.json").read_text())
    assert written["stop_when_stable"]["stopped_at_step"] == record["stopped_at_step"]


def test_scores_that_never_settle_run_the_whole_schedule(tmp_path: Path) -> None:
    engine = _fit(tmp_path, SettlingScore(settles=False, max_epochs=4), stop_when_stable=0.05)
    assert engine.run_info["stop_when_stable"]["stopped_at_step"] is None
    assert engine.run_info["steps"] == 4 * BATCHES_PER_EPOCH


def test_without_the_option_nothing_stops_early(tmp_path: Path) -> None:
    engine = _fit(tmp_path, SettlingScore(max_epochs=8))
    assert engine.run_info["steps"] == 8 * BATCHES_PER_EPOCH and "stop_when_stable" not in engine.run_info


def test_only_validation_normals_are_read() -> None:
    """Anomalies in the validation set (synthetic ones) may move as they like; they never delay a stop."""
    callback = StopWhenStable(tolerance=0.05, patience=1)
    trainer = SimpleNamespace(sanity_checking=False, global_step=0, current_epoch=0, should_stop=False)
    labels = torch.tensor([0, 0, 0, 1, 1])
    for epoch in range(2):
        trainer.current_epoch, trainer.global_step = epoch, 10 * epoch
        scores = torch.tensor([0.1, 0.2, 0.4, 5.0 * (epoch + 1), -3.0 * epoch])
        callback.on_validation_epoch_start(trainer, None)
        callback.on_validation_batch_end(trainer, None, SimpleNamespace(pred_score=scores),
                                         SimpleNamespace(gt_label=labels), 0)
        callback.on_validation_epoch_end(trainer, None)
    assert trainer.should_stop and callback.stopped_at == 10


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, True, "0.05"])
def test_bad_tolerance_is_a_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="stop_when_stable"):
        UadEngine(stop_when_stable=bad)
