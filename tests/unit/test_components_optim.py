"""UniAD/OneNIP schedule: one x0.1 step at ``decay_at`` of training, never again (issue 12, item 3)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from uad_plugins.components.optim import adamw_with_one_decay

torch.set_num_threads(2)


def _lrs(decay_at: float, max_epochs: int) -> list[float]:
    module = SimpleNamespace(_trainer=SimpleNamespace(max_epochs=max_epochs))
    config = adamw_with_one_decay(module, [torch.nn.Parameter(torch.zeros(1))], 1e-4, 1e-4, decay_at)
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(max_epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize(("decay_at", "max_epochs", "first_decayed"), [(0.8, 10, 8), (0.3, 10, 3), (0.5, 4, 2),
                                                                        (0.1, 20, 2)])
def test_one_decay_only(decay_at: float, max_epochs: int, first_decayed: int) -> None:
    lrs = _lrs(decay_at, max_epochs)
    assert lrs[:first_decayed] == pytest.approx([1e-4] * first_decayed)
    assert lrs[first_decayed:] == pytest.approx([1e-5] * (max_epochs - first_decayed))  # StepLR went to 1e-6, 1e-7


def test_decay_in_steps_when_the_fit_knows_its_steps() -> None:
    """A schedule in optimiser steps (max_steps, epochs unbounded): the milestone is a step, stepped per step."""
    module = SimpleNamespace(_trainer=SimpleNamespace(max_epochs=-1, estimated_stepping_batches=200))
    config = adamw_with_one_decay(module, [torch.nn.Parameter(torch.zeros(1))], 1e-4, 1e-4, 0.8)
    assert config["lr_scheduler"]["interval"] == "step"
    assert list(config["lr_scheduler"]["scheduler"].milestones) == [160]
    unbounded = SimpleNamespace(_trainer=SimpleNamespace(max_epochs=-1, estimated_stepping_batches=float("inf")))
    assert isinstance(adamw_with_one_decay(unbounded, [torch.nn.Parameter(torch.zeros(1))], 1e-4, 0.0, 0.8),
                      torch.optim.AdamW)


def test_no_schedule_without_epochs_or_decay() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert isinstance(adamw_with_one_decay(SimpleNamespace(), params, 1e-4, 0.0, 0.8), torch.optim.AdamW)
    module = SimpleNamespace(_trainer=SimpleNamespace(max_epochs=10))
    assert isinstance(adamw_with_one_decay(module, params, 1e-4, 0.0, 0.0), torch.optim.AdamW)


_TINY = {"pretrained": False, "image_size": 128, "hidden_dim": 64, "num_heads": 4, "num_encoder_layers": 1,
         "num_decoder_layers": 1, "dim_feedforward": 128, "dropout": 0.0, "neighbor_size": 3}


@pytest.mark.parametrize("name", ["uniad", "onenip"])
def test_models_decay_once(name: str) -> None:
    """The real models' configure_optimizers: 10 epochs, decay at 0.3 -> one step at epoch 3, none at 6 or 9."""
    from uad_plugins.factory import create_model

    extra = {"refiner_width": 16, "prompt_bank_size": 4} if name == "onenip" else {}
    model = create_model(f"plugin:{name}", **_TINY, **extra, lr_decay_at=0.3)
    model._trainer = SimpleNamespace(max_epochs=10)
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([model.lr] * 3 + [model.lr * 0.1] * 7)
