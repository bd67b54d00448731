"""OneNIP plugin: prompt bank and selection, training signal, fusion statistics, checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch

from uad_plugins.errors import ConfigError, UadError
from uad_plugins.plugins.onenip.model import Onenip
from uad_plugins.plugins.onenip.torch_model import OnenipModel, OnenipTrainOutput, dice_loss

TINY = {"pretrained": False, "image_size": 128, "hidden_dim": 64, "num_heads": 4, "num_encoder_layers": 1,
        "num_decoder_layers": 1, "dim_feedforward": 128, "dropout": 0.0, "neighbor_size": 3, "refiner_width": 16,
        "prompt_bank_size": 4}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def tiny_net(**overrides: object) -> OnenipModel:
    torch.manual_seed(0)
    return OnenipModel(**{**TINY, **overrides})


def textures(n: int, size: int = 128, seed: int = 0, freq: float = 8.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, freq * torch.pi, size)
    base = (0.25 * torch.sin(x)[None, :] * torch.cos(x)[:, None]).expand(3, size, size)
    return base + 0.05 * torch.randn(n, 3, size, size, generator=gen)


def filled_net(**overrides: object) -> OnenipModel:
    net = tiny_net(**overrides)
    net.build_prompt_bank([textures(2, seed=1), textures(2, seed=2)], total=4)
    return net


def test_dice_variants() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    assert float(dice_loss(target, target)) == pytest.approx(0.5, abs=0.02)  # OneNIP's variant: no factor 2
    assert float(dice_loss(target, target, factor_two=True)) == pytest.approx(0.0, abs=1e-6)
    assert float(dice_loss(torch.zeros_like(target), torch.zeros_like(target))) == pytest.approx(0.0)


def test_prompt_bank_fill_and_cycle() -> None:
    net = tiny_net(prompt_bank_size=5)
    kept = net.build_prompt_bank([textures(3, seed=1)])
    assert kept == 3 and bool(net.prompt_bank_filled)
    assert torch.equal(net.prompt_bank[3], net.prompt_bank[0])  # a short stream is cycled
    assert torch.allclose(net.prompt_keys.norm(dim=1), torch.ones(5))


def test_prompt_selection_picks_the_most_similar_bank_entry() -> None:
    net = tiny_net(prompt_bank_size=3)
    kinds = [textures(1, seed=1, freq=2.0), textures(1, seed=2, freq=8.0), torch.rand(1, 3, 128, 128) * 2 - 1]
    net.build_prompt_bank(kinds)
    with torch.no_grad():
        queries = net.features(torch.cat([textures(1, seed=7, freq=8.0), textures(1, seed=8, freq=2.0)]))
        index = net.select_prompts(queries)
        expected = (net.global_keys(queries) @ net.prompt_keys.T).argmax(dim=1)
    assert index.tolist() == expected.tolist() == [1, 0]
    # training prompts never pick the image itself when other entries exist
    with torch.no_grad():
        own = net.prompt_bank[:3]
        for _ in range(5):
            picked = net.training_prompts(own)
            assert (picked != torch.arange(3)).all()


def test_eval_shapes_fusion_and_score() -> None:
    net = filled_net().eval()
    net.fusion_scale.fill_(3.0)
    images = textures(2, seed=5)
    with torch.no_grad():
        out = net(images)
        rec, ref, _ = net.maps(images)
    assert isinstance(out, InferenceBatch)
    assert out.pred_score.shape == (2,) and out.anomaly_map.shape == (2, 1, 128, 128)
    assert torch.allclose(out.anomaly_map, 0.5 * rec + 1.5 * ref, atol=1e-6)
    assert ((ref >= 0) & (ref <= 1)).all()
    expected = F.avg_pool2d(out.anomaly_map, 16, stride=1).flatten(1).max(dim=1).values
    assert torch.allclose(out.pred_score, expected)


def test_three_component_maps_and_the_fused_one_is_what_the_model_returns() -> None:
    from uad_plugins.plugins.onenip.torch_model import COMPONENT_MAPS

    net = filled_net().eval()
    net.fusion_scale.fill_(2.5)
    images = textures(2, seed=6)
    with torch.no_grad():
        maps = net.component_maps(images)
        out = net(images)
        rec, ref, _ = net.maps(images)
    assert tuple(maps) == COMPONENT_MAPS == ("reconstruction", "refiner", "fused")
    assert all(m.shape == (2, 1, 128, 128) for m in maps.values())
    torch.testing.assert_close(maps["reconstruction"], rec)
    torch.testing.assert_close(maps["refiner"], ref)
    torch.testing.assert_close(maps["fused"], out.anomaly_map)  # the fused map is what forward scores
    torch.testing.assert_close(maps["fused"], 0.5 * rec + 1.25 * ref)
    assert not torch.allclose(maps["fused"], maps["reconstruction"])


@pytest.mark.parametrize("score_map", ["reconstruction", "refiner", "fused"])
def test_score_map_picks_the_map_forward_returns_and_scores(score_map: str) -> None:
    net = filled_net(score_map=score_map).eval()
    net.fusion_scale.fill_(2.5)
    images = textures(2, seed=7)
    with torch.no_grad():
        maps = net.component_maps(images)
        out = net(images)
    torch.testing.assert_close(out.anomaly_map, maps[score_map])
    expected = F.avg_pool2d(maps[score_map], 16, stride=1).flatten(1).max(dim=1).values
    torch.testing.assert_close(out.pred_score, expected)


def test_score_map_is_checked_and_switches_a_trained_checkpoint(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    with pytest.raises(ConfigError, match="score_map"):
        Onenip(**{**TINY, "score_map": "refined"})
    with pytest.raises(ValueError, match="score_map"):
        tiny_net(score_map="both")
    torch.manual_seed(0)
    model = Onenip(**TINY)
    model.model.build_prompt_bank([textures(4, seed=3)])
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path / "onenip.ckpt"
    trainer.save_checkpoint(path)
    refiner = Onenip.load_from_checkpoint(path, score_map="refiner").eval()
    assert refiner.hparams["score_map"] == "refiner"
    images = textures(2, seed=9)
    with torch.no_grad():
        maps = model.eval().model.component_maps(images)
        out = refiner.model(images)
    torch.testing.assert_close(out.anomaly_map, maps["refiner"])  # same weights, the refiner's map scored


def test_training_needs_the_bank_and_loss_decreases() -> None:
    net = tiny_net()
    images = textures(2)
    mask = torch.zeros(2, 1, 128, 128)
    mask[:, :, 40:80, 40:80] = 1
    anomalous = images * (1 - mask) + mask
    with pytest.raises(RuntimeError):
        net.train().training_losses(images, anomalous, mask)
    net.build_prompt_bank([textures(4, seed=3)])
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(10):
        out = net.training_losses(images, anomalous, mask)
        assert isinstance(out, OnenipTrainOutput) and out.prompt_index.shape == (2,)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_lightning_synthesis_and_validation() -> None:
    model = Onenip(**TINY)
    assert model.trainer_arguments["gradient_clip_val"] == 0.1
    images = model.pre_processor.transform(torch.rand(2, 3, 128, 128))
    anomalous, mask = model.synthesize(images)
    assert anomalous.shape == images.shape and mask.shape == (2, 1, 128, 128)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    with pytest.raises(ConfigError):
        Onenip(**{**TINY, "neighbor_size": 9})
    with pytest.raises(UadError):
        Onenip(**{**TINY, "synthesizer": "plugin:no_such_synthesizer"})


def test_checkpoint_round_trip_keeps_bank_and_fusion(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    torch.manual_seed(0)
    model = Onenip(**TINY)
    model.model.build_prompt_bank([textures(4, seed=3)])
    model.model.fusion_scale.fill_(2.5)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path / "onenip.ckpt"
    trainer.save_checkpoint(path)
    images = textures(2, seed=9)
    model.eval()
    reloaded = Onenip.load_from_checkpoint(path).eval()
    assert float(reloaded.model.fusion_scale) == 2.5 and bool(reloaded.model.prompt_bank_filled)
    assert torch.equal(reloaded.model.prompt_bank, model.model.prompt_bank)
    with torch.no_grad():
        before, after = model.model(images), reloaded.model(images)
    assert torch.allclose(before.anomaly_map, after.anomaly_map, atol=1e-6)


@pytest.mark.parametrize("synthesizer", ["plugin:cutpaste", {"class_path": "plugin:cutpaste",
                                                             "init_args": {"variant": "scar"}},
                                         "plugin:perlin_texture"])
def test_refiner_anomalies_come_from_any_image_synthesizer(synthesizer: object) -> None:
    """The synthesizers of `uad synth` feed OneNIP's refiner: masks mark changed pixels of the normalised batch."""
    model = Onenip(**{**TINY, "synthesizer": synthesizer})
    images = model.pre_processor.transform(textures(2, seed=5))
    torch.manual_seed(0)
    anomalous, mask = model.synthesize(images)
    assert anomalous.shape == images.shape and mask.shape == (2, 1, 128, 128) and mask.sum() > 0
    changed = (anomalous - images).abs().amax(1, keepdim=True) > 1e-4
    assert changed[mask > 0].float().mean() > 0.5


def test_fusion_scale_is_only_fitted_while_fitting() -> None:
    """Issue 12, item 2: `uad validate` (or any validation outside fitting) never changes a trained model."""
    from types import SimpleNamespace

    from lightning.pytorch.trainer.states import TrainerFn

    class Untouchable:
        def __iter__(self):
            raise AssertionError("validation images were read outside fitting")

    model = Onenip(**TINY)
    before = model.model.fusion_scale.clone()
    for fn in (TrainerFn.VALIDATING, TrainerFn.TESTING, TrainerFn.PREDICTING):
        model._trainer = SimpleNamespace(state=SimpleNamespace(fn=fn), val_dataloaders=[Untouchable()],
                                         sanity_checking=False)
        model.on_validation_epoch_start()
    assert torch.equal(model.model.fusion_scale, before)
