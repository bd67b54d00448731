"""UniAD plugin: network shapes, training signal, scoring, Lightning checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch

from uad_plugins.errors import ConfigError
from uad_plugins.plugins.uniad.model import Uniad
from uad_plugins.plugins.uniad.torch_model import UniadModel, UniadTrainOutput, max_avgpool_score

TINY = {"pretrained": False, "image_size": 128, "hidden_dim": 64, "num_heads": 4, "num_encoder_layers": 1,
        "num_decoder_layers": 1, "dim_feedforward": 128, "dropout": 0.0, "neighbor_size": 3}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def tiny_net(**overrides: object) -> UniadModel:
    torch.manual_seed(0)
    return UniadModel(**{**TINY, **overrides})


def textures(n: int, size: int = 128, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 8 * torch.pi, size)
    base = (0.25 * torch.sin(x)[None, :] * torch.cos(x)[:, None]).expand(3, size, size)
    return base + 0.05 * torch.randn(n, 3, size, size, generator=gen)


def test_eval_shapes_and_score_is_max_of_avgpooled_map() -> None:
    net = tiny_net().eval()
    with torch.no_grad():
        out = net(textures(2))
    assert isinstance(out, InferenceBatch)
    assert out.pred_score.shape == (2,) and out.anomaly_map.shape == (2, 1, 128, 128)
    assert torch.isfinite(out.anomaly_map).all() and (out.anomaly_map >= 0).all()
    expected = F.avg_pool2d(out.anomaly_map, 16, stride=1).flatten(1).max(dim=1).values
    assert torch.allclose(out.pred_score, expected)
    assert torch.allclose(max_avgpool_score(out.anomaly_map, 1), out.anomaly_map.flatten(1).max(dim=1).values)


def test_grid_channels_and_defaults() -> None:
    net = tiny_net()
    assert net.grid == (8, 8)
    assert net.input_proj.in_features == 192 and net.output_proj.out_features == 192
    assert len(net.decoder) == 1 and net.decoder[0].query.shape == (64, 64)
    assert net.mask.shape == (64, 64)


def test_neighbour_window_must_be_smaller_than_the_grid() -> None:
    with pytest.raises(ConfigError):
        tiny_net(neighbor_size=9)  # 128 px -> 8x8 tokens


def test_jitter_only_in_training() -> None:
    net = tiny_net()
    images = textures(2)
    net.eval()
    with torch.no_grad():
        a, b = net.reconstruct(images)[1], net.reconstruct(images)[1]
    assert torch.equal(a, b)
    net.train()
    with torch.no_grad():
        c, d = net.reconstruct(images)[1], net.reconstruct(images)[1]
    assert not torch.allclose(c, d)


def test_loss_decreases_on_a_tiny_batch() -> None:
    net = tiny_net().train()
    images = textures(4)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(12):
        out = net(images)
        assert isinstance(out, UniadTrainOutput)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert not any(p.grad is not None for p in net.features.parameters())


def test_lightning_module_suggestions_and_validation() -> None:
    model = Uniad(**TINY)
    args = model.trainer_arguments
    assert args["gradient_clip_val"] == 0.1 and args["max_epochs"] == 20
    optimizer = model.configure_optimizers()  # no trainer: plain AdamW
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 1e-4
    with pytest.raises(ConfigError):
        Uniad(**{**TINY, "neighbor_size": 4})
    with pytest.raises(ConfigError):
        Uniad(**{**TINY, "num_heads": 3})


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    torch.manual_seed(0)
    model = Uniad(**TINY)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path / "uniad.ckpt"
    trainer.save_checkpoint(path)
    images = textures(2)
    model.eval()
    with torch.no_grad():
        before = model.model(images)
        after = Uniad.load_from_checkpoint(path).eval().model(images)
    assert torch.allclose(before.anomaly_map, after.anomaly_map, atol=1e-6)
    assert torch.allclose(before.pred_score, after.pred_score, atol=1e-6)
