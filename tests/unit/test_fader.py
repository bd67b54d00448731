"""FADeR plugin (on the EAR base): mask, hint, gates, training stages, settings, weights, Lightning fit, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch

from uad_plugins.errors import ConfigError, WeightsError
from uad_plugins.plugins.fader.model import Fader
from uad_plugins.plugins.fader.torch_model import (
    AttentionSaliency,
    FaderModel,
    attenuation_targets,
    corrupt_patches,
    create_vit,
    hint_images,
    mosaic,
    msgms_map,
    ssim_loss,
    topk_patch_mask,
)

TINY = {"backbone": "test_vit", "pretrained": False, "image_size": 64, "patch_size": 8, "mosaic_size": 4,
        "base_channels": 8, "depth": 3, "attenuation_hidden": 16}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def tiny_net(**overrides: object) -> FaderModel:
    torch.manual_seed(0)
    return FaderModel(**{**TINY, **overrides})


def textures(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth, similar 'normal' images in [0, 1]: a sine pattern with a little noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 6 * torch.pi, size)
    base = (0.5 + 0.25 * torch.sin(x)[None, :] * torch.cos(x)[:, None]).expand(3, size, size)
    return (base + 0.03 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)


# ---------------------------------------------------------------------------------------------- network
def test_eval_output_shapes_and_score_is_map_max() -> None:
    net = tiny_net().eval()
    with torch.no_grad():
        out = net(textures(2))
    assert isinstance(out, InferenceBatch)
    assert out.pred_score.shape == (2,) and out.anomaly_map.shape == (2, 1, 64, 64)
    torch.testing.assert_close(out.pred_score, out.anomaly_map.amax(dim=(1, 2, 3)))
    assert torch.isfinite(out.anomaly_map).all() and (out.anomaly_map >= 0).all()


def test_mask_is_deterministic_per_image_with_exactly_k_top_patches() -> None:
    net = tiny_net(mask_ratio=0.25).eval()
    images = textures(3, seed=1)
    with torch.no_grad():
        saliency = F.interpolate(net.mask_source(images), size=net.grid, mode="bilinear", align_corners=False)
        mask = net.patch_mask(images)
        again = net.patch_mask(images)
        alone = net.patch_mask(images[1:2])  # a different batch does not change an image's mask
    assert net.grid == (8, 8) and net.num_masked == 16
    assert torch.equal(mask, again) and torch.equal(mask[1:2], alone)
    assert mask.sum(dim=(1, 2, 3)).tolist() == [16.0, 16.0, 16.0]
    for i in range(3):  # the excised patches are the 16 most salient ones
        values = saliency[i].flatten()
        chosen = mask[i].flatten().bool()
        assert values[chosen].min() >= values[~chosen].max()


def test_topk_mask_picks_the_largest_values() -> None:
    saliency = torch.tensor([[[[0.1, 0.9], [0.5, 0.2]]], [[[3.0, 1.0], [2.0, 4.0]]]])
    mask = topk_patch_mask(saliency, 2)
    assert mask.tolist() == [[[[0.0, 1.0], [1.0, 0.0]]], [[[1.0, 0.0], [0.0, 1.0]]]]


def test_mosaic_hint_changes_only_masked_pixels_and_uses_block_means() -> None:
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pixel_mask = torch.zeros(1, 1, 16, 16)
    pixel_mask[..., 4:12, 0:8] = 1.0
    hinted = hint_images(images, pixel_mask, "mosaic", 4)
    outside = pixel_mask.expand_as(images) == 0
    torch.testing.assert_close(hinted[outside], images[outside])
    torch.testing.assert_close(hinted[0, :, 4:8, 0:4], images[0, :, 4:8, 0:4].mean(dim=(1, 2))[:, None, None]
                               .expand(3, 4, 4))
    torch.testing.assert_close(mosaic(images, 4)[..., 0:4, 0:4], images[..., 0:4, 0:4].mean(dim=(2, 3), keepdim=True)
                               .expand(1, 3, 4, 4))
    blank = hint_images(images, pixel_mask, "blank", 4)
    assert float(blank[pixel_mask.expand_as(images) == 1].abs().max()) == 0.0


def ready_net(**overrides: object) -> FaderModel:
    """A tiny model past the stage switch (statistics from made-up errors, decoder copied from the base)."""
    net = tiny_net(**overrides)
    net.start_fader(torch.linspace(0.0, 1.0, 101))
    return net


def test_gates_are_not_applied_before_the_fader_stage_and_gates_off_is_the_base() -> None:
    net = tiny_net().eval()
    images = textures(2)
    with torch.no_grad():
        base = net.reconstruct(images, attenuate=False)
        before = net.reconstruct(images)  # FADeR not started: the base decodes, no gates
        net.start_fader(torch.linspace(0.0, 1.0, 101))
        torch.nn.init.normal_(net.gated_decoder.head.weight)  # the fine-tuned copy differs from the base
        net.gates = False
        off = net.reconstruct(images)
        net.gates = True
        on = net.reconstruct(images)
    assert before.gates is None and off.gates is None and on.gates is not None
    torch.testing.assert_close(before.reconstruction, base.reconstruction)
    torch.testing.assert_close(off.reconstruction, base.reconstruction)  # gates off = the base exactly
    assert float((on.reconstruction - base.reconstruction).abs().max()) > 1e-3


def test_gates_are_held_open_on_excised_patches_and_upsampled_smoothly() -> None:
    net = ready_net().eval()
    images = textures(2)
    with torch.no_grad():
        net.attenuator.fc2.bias.fill_(-30.0)  # every predicted gate ~0
        out = net.reconstruct(images)
    assert out.gates.shape == (2, 2, 8, 8)  # depth 3: two skip levels, 8x8 patch grid
    excised = out.mask.expand_as(out.gates) == 1
    assert torch.all(out.gates[excised] == 1.0) and float(out.gates[~excised].max()) < 1e-6
    levels = net.level_gates(out.gates)
    assert [tuple(g.shape[-2:]) for g in levels] == [(64, 64), (32, 32)]
    values = torch.unique(levels[0])  # bilinear: values between 0 and 1 appear at the borders of excised patches
    assert float(values.min()) < 1e-6 and float(values.max()) == pytest.approx(1.0)
    assert bool(((values > 0.01) & (values < 0.99)).any())
    ones = net.level_gates(torch.ones(1, 2, 8, 8))
    assert all(bool(torch.all(g == 1.0)) for g in ones)  # open gates change nothing


def test_attenuation_targets_are_scaled_by_the_normal_statistics() -> None:
    errors = torch.tensor([0.0, 0.01, 0.02, 0.03, 0.04, 0.06])
    targets = attenuation_targets(errors, 0.02, 0.04)
    torch.testing.assert_close(targets, torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0]))
    net = tiny_net(target_quantile=0.9)
    net.start_fader(torch.arange(101, dtype=torch.float32))  # median 50, q90 = 90
    low, high = net.target_bounds()
    assert float(low) == pytest.approx(90.0) and float(high) == pytest.approx(130.0)


def test_corruptions_touch_whole_patches_and_keep_the_rest() -> None:
    images = textures(3)
    gen = torch.Generator().manual_seed(0)
    corrupted, chosen = corrupt_patches(images, 8, 0.1, gen)
    assert chosen.shape == (3, 1, 8, 8) and bool(torch.all(chosen.sum(dim=(1, 2, 3)) >= 1))
    pixel = F.interpolate(chosen, scale_factor=8, mode="nearest").expand_as(images) == 1
    torch.testing.assert_close(corrupted[~pixel], images[~pixel])
    assert float((corrupted[pixel] - images[pixel]).abs().mean()) > 0.02


def test_reconstruction_errors_are_zero_for_a_perfect_reconstruction() -> None:
    images = textures(2)
    assert float(msgms_map(images, images).abs().max()) < 1e-6
    assert float(ssim_loss(images, images)) == pytest.approx(0.0, abs=1e-5)
    flat = torch.full_like(images, 0.5)  # no gradients at all: GMS = c / (g^2 + c), far below 1 on the texture
    assert float(msgms_map(images, flat).mean()) > 0.3


def test_base_training_reduces_the_loss() -> None:
    net = tiny_net(attenuation=False).train()
    images = textures(2)
    optimizer = torch.optim.Adam(net.unet.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        out = net.base_losses(images)
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert not any(p.requires_grad for p in net.mask_source.parameters())
    assert net.mask_source.training is False  # frozen: stays in eval mode


def test_fader_stage_trains_gates_and_decoder_copy_and_never_the_base() -> None:
    net = ready_net()
    images = textures(4)
    net.unet.eval().requires_grad_(False)
    unet_before = {k: v.clone() for k, v in net.unet.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in net.gated_decoder.state_dict().items()}
    optimizer = torch.optim.Adam([*net.attenuator.parameters(), *net.gated_decoder.parameters()], lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        out = net.fader_losses(images, attenuation_weight=1.0)
        out.loss.backward()
        optimizer.step()
    for key, value in net.unet.state_dict().items():
        assert torch.equal(value, unet_before[key]), key
    assert any(not torch.equal(v, decoder_before[k]) for k, v in net.gated_decoder.state_dict().items())
    assert 0.0 <= float(out.target_mean) <= 1.0 and 0.0 < float(out.gate_mean) < 1.0
    with pytest.raises(RuntimeError, match="start_fader"):
        tiny_net().fader_losses(images)


def test_building_fader_does_not_move_the_random_state() -> None:
    torch.manual_seed(0)
    with_fader = FaderModel(**TINY)
    after_with = torch.rand(3)
    torch.manual_seed(0)
    without = FaderModel(**{**TINY, "attenuation": False})
    after_without = torch.rand(3)
    torch.testing.assert_close(after_with, after_without)
    for key, value in without.unet.state_dict().items():
        assert torch.equal(with_fader.unet.state_dict()[key], value), key


def test_old_checkpoints_without_the_decoder_copy_still_load() -> None:
    net = ready_net()
    state = {k: v for k, v in net.state_dict().items()
             if not k.startswith("gated_decoder.") and k not in ("error_high", "error_median")}
    fresh = tiny_net()
    fresh.load_state_dict(state)
    assert fresh.ready
    for key, value in fresh.gated_decoder.state_dict().items():
        assert torch.equal(value, net.unet.state_dict()[key]), key


def test_attenuation_false_is_the_plain_base() -> None:
    net = tiny_net(attenuation=False)
    assert net.attenuator is None
    assert not any(k.startswith("attenuator.") for k in net.state_dict())
    with pytest.raises(RuntimeError, match="attenuation=False"):
        net.fader_losses(textures(1))
    module = Fader(**{**TINY, "attenuation": False})
    assert len(module.configure_optimizers()) == 1
    assert len(Fader(**TINY).configure_optimizers()) == 2


# ---------------------------------------------------------------------------------------------- mask sources
def test_attention_source_is_the_class_token_row_of_the_last_block() -> None:
    torch.manual_seed(0)
    source = AttentionSaliency("test_vit", False)
    images = textures(2)
    with torch.no_grad():
        row = source.cls_attention(images)  # [B, heads, N]
        vit = source.vit
        x = F.interpolate(source.normalise(images), size=source.input_size, mode="bilinear", align_corners=False)
        tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        for block in vit.blocks[:-1]:
            tokens = block(tokens)
        attn = vit.blocks[-1].attn
        hidden = vit.blocks[-1].norm1(tokens)
        v = attn.qkv(hidden).reshape(2, hidden.shape[1], 3, attn.num_heads, attn.head_dim)[:, :, 2]  # [B,N,h,d]
        ours = torch.einsum("bhn,bnhd->bhd", row, v).reshape(2, -1)
        timm_out = attn(hidden)[:, 0]  # timm's own (fused) attention output for the class token
    torch.testing.assert_close(attn.proj(ours), timm_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(row.sum(-1), torch.ones(2, attn.num_heads))
    assert source(images).shape == (2, 1, 10, 10)  # 160 px / 16


def test_saliency_source_marks_a_region_that_differs_from_the_rest() -> None:
    net = tiny_net(mask_source="saliency", backbone="tf_efficientnet_lite0", mask_ratio=4 / 64)
    images = torch.full((1, 3, 64, 64), 0.5)
    images[..., 24:40, 24:40] = 1.0  # a bright 16x16 square = 4 patches of 8 px
    with torch.no_grad():
        mask = net.patch_mask(images)[0, 0]
    square = torch.zeros(8, 8, dtype=torch.bool)
    square[2:6, 2:6] = True  # the square and its direct border (the features' receptive field)
    assert mask.sum() == 4 and bool(mask.bool()[~square].sum() == 0)


def test_pretrained_path_loads_vit_weights_and_bad_files_raise(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = create_vit("test_vit", False)
    path = tmp_path / "vit.pth"
    torch.save(reference.state_dict(), path)
    loaded = create_vit("test_vit", str(path))
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    net = tiny_net(pretrained=str(path))
    assert torch.equal(net.mask_source.vit.pos_embed, reference.pos_embed)
    other = tmp_path / "other.pth"
    weights = reference.state_dict()
    weights["pos_embed"] = weights["pos_embed"][:, :50]  # made for another input size
    weights.pop("blocks.0.norm1.weight")
    torch.save(weights, other)
    with pytest.raises(WeightsError, match=r"1 missing and 1 mismatching keys") as info:
        create_vit("test_vit", str(other))
    assert "blocks.0.norm1.weight" in str(info.value) and "pos_embed" in str(info.value)
    with pytest.raises(WeightsError, match="not found"):
        create_vit("test_vit", str(tmp_path / "missing.pth"))


def test_hub_weights_offline_raise_a_weights_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        create_vit("test_vit", True)
    assert "--model.mask_source saliency" in str(info.value) and "--model.pretrained" in str(info.value)


def test_unknown_or_unsupported_mask_networks_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="Did you mean"):
        create_vit("vit_smal_patch16_224", False)
    with pytest.raises(ConfigError, match="class token"):
        create_vit("resnet18", False)


# ---------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("overrides", "option"), [
    ({"mask_ratio": 0}, "mask_ratio"),
    ({"mask_ratio": 1.0}, "mask_ratio"),
    ({"patch_size": 12}, "patch_size"),  # not a power of two
    ({"patch_size": 128}, "patch_size"),  # larger than the image
    ({"patch_size": 2, "depth": 4}, "patch_size"),  # smaller than the deepest skip stride (4 at depth 4)
    ({"image_size": 96, "patch_size": 64}, "patch_size"),  # does not divide the image
    ({"image_size": 72, "depth": 5, "patch_size": 8}, "image_size"),  # not divisible by 2**(depth-1) = 16
    ({"mosaic_size": 5}, "mosaic_size"),
    ({"mask_source": "dino"}, "mask_source"),
    ({"hint": "noise"}, "hint"),
    ({"anomaly_map": "ssim"}, "anomaly_map"),
    ({"depth": 1}, "depth"),
    ({"fader_epochs": 0}, "fader_epochs"),
    ({"gates": "no"}, "gates"),
    ({"corruption_rate": 1.0}, "corruption_rate"),
    ({"target_quantile": 0.4}, "target_quantile"),
    ({"attenuation": "yes"}, "attenuation"),
    ({"attenuation_weight": 0.0}, "attenuation_weight"),
    ({"base_channels": 0}, "base_channels"),
])
def test_bad_settings_raise_config_errors(overrides: dict, option: str) -> None:
    with pytest.raises(ConfigError, match=rf"fader: {option}="):
        Fader(**{**TINY, **overrides})


def test_a_mask_ratio_that_rounds_to_no_patch_is_refused() -> None:
    with pytest.raises(ConfigError, match="nothing is left to reconstruct") as info:
        tiny_net(mask_ratio=0.005)  # 0.32 of 64 patches
    assert "--model.mask_ratio" in str(info.value)
    with pytest.raises(ConfigError, match="nothing is left visible"):
        tiny_net(mask_ratio=0.995)


# ---------------------------------------------------------------------------------------------- Lightning
def test_fit_runs_both_stages_then_freezes_the_base_and_round_trips(tmp_path: Path) -> None:
    from anomalib.data import MVTecAD
    from lightning.pytorch import Callback, Trainer

    from uad_plugins.testing import make_synthetic_image_dataset

    class Recorder(Callback):
        def __init__(self) -> None:
            self.stages: list[str] = []
            self.unet_at_switch: dict[str, torch.Tensor] | None = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            stage = pl_module.stage(batch_idx)
            if stage == "fader" and self.unet_at_switch is None:
                self.unet_at_switch = {k: v.clone() for k, v in pl_module.model.unet.state_dict().items()}
            self.stages.append(stage)

    torch.manual_seed(0)
    root = make_synthetic_image_dataset(tmp_path / "data", n_train=8)
    data = MVTecAD(root=root, category="synthetic", train_batch_size=4, eval_batch_size=4, num_workers=0)
    model = Fader(**TINY, fader_epochs=1)
    recorder = Recorder()
    trainer = Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, callbacks=[recorder],
                      default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert recorder.stages == ["base", "base", "fader", "fader"]
    assert float(model.model.fader_ready) == 1.0 and model.model.ready
    assert 0.0 < float(model.model.error_median) < float(model.model.error_high)
    for key, value in model.model.unet.state_dict().items():  # weights and BatchNorm statistics untouched
        assert torch.equal(value, recorder.unet_at_switch[key]), key
    path = tmp_path / "fader.ckpt"
    trainer.save_checkpoint(path)
    reloaded = Fader.load_from_checkpoint(path).eval()
    images = textures(2)
    model.eval()
    assert reloaded.model.ready
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(images).anomaly_map, model.model(images).anomaly_map)
    off = Fader.load_from_checkpoint(path, gates=False).eval()  # the same checkpoint scored by its base alone
    model.model.gates = False
    with torch.no_grad():
        torch.testing.assert_close(off.model(images).anomaly_map, model.model(images).anomaly_map)
    assert Fader(**TINY, fader_epochs=1).trainer_arguments["max_epochs"] == 21
    assert Fader(**TINY, attenuation=False).trainer_arguments["max_epochs"] == 20


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{"mask_source": "saliency", "backbone": "tf_efficientnet_lite0"},
                                       {"attenuation": False}])
def test_eval_forward_exports_to_openvino_with_matching_outputs(overrides: dict) -> None:
    ov = pytest.importorskip("openvino")
    net = tiny_net(**overrides).eval()
    if net.attenuator is not None:
        net.start_fader(torch.linspace(0.0, 1.0, 101))
    images = textures(6, seed=3)
    with torch.no_grad():
        eager = net(images)
        program = torch.export.export(net, (images[:2],),
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), strict=False)
    compiled = ov.Core().compile_model(ov.convert_model(program), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(images.numpy())
    score, amap = np.asarray(result[0]), np.asarray(result[1])
    assert np.abs(score - eager.pred_score.numpy()).max() < 1e-5
    assert np.abs(amap - eager.anomaly_map.numpy()).max() < 1e-5


# ---------------------------------------------------------------------------------------------- the central claim
class _TopRows(torch.nn.Module):
    """A mask source that ignores the image: the top rows of the patch grid are always the most 'salient', so a
    defect lower down is never excised (an incomplete mask, the case FADeR exists for)."""

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows = torch.linspace(1.0, 0.0, self.grid).view(1, 1, self.grid, 1)
        cols = 1e-3 * torch.linspace(0.0, 1.0, self.grid).view(1, 1, 1, self.grid)
        return (rows + cols).expand(images.shape[0], 1, self.grid, self.grid)


def _phase_textures(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """A procedural texture: a sine-cosine grid with a random phase per image and a little noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 4 * torch.pi, size)
    phase = torch.rand(n, 1, 1, 1, generator=gen) * 2 * torch.pi
    base = 0.5 + 0.25 * torch.sin(x[None, None, None, :] + phase) * torch.cos(x[None, None, :, None])
    return (base.expand(n, 3, size, size) + 0.02 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)


def test_fader_raises_the_score_of_a_defect_the_mask_missed() -> None:
    """The paper's central claim on a tiny case: one model, trained base stage then FADeR stage, scored with the
    gates on and off (the base alone). A red square outside the (fixed, incomplete) mask leaks through the skips;
    with FADeR its image scores higher than with the base alone, and the margin over the normal images' scores
    grows (the normal scores do not rise with it).

    Seeds 0-5 (torch seed and training images) were tried when the test was written: the margin grew in all six,
    the defect's raw score rose in five (seed 2: 0.145 with FADeR vs 0.151 without, margin 0.079 vs 0.059). Seed 0
    is kept; it is deterministic on CPU.

    What this does NOT show: at this scale (40 + 60 steps, 32 px) the learnt gates are not selective (the defect's
    gate is about the same as the normal patches'); the gain comes from the FADeR stage as a whole (attenuated skips
    and the decoder copy trained to rebuild the clean image from corrupted inputs). Whether the gates single out
    leaked defects on real data is for configs/bench/fader_gates.yaml to measure.
    """
    torch.set_num_threads(1)  # tiny convolutions: one thread is several times faster on busy cores
    size, patch = 32, 4
    grid = size // patch
    torch.manual_seed(0)
    net = FaderModel(backbone="test_vit", pretrained=False, image_size=size, patch_size=patch, mosaic_size=2,
                     base_channels=8, depth=3, attenuation_hidden=16, smoothing_sigma=1.0)
    net.mask_source = _TopRows(grid)
    normals = _phase_textures(32, seed=0)
    optimizer = torch.optim.Adam(net.unet.parameters(), lr=1e-2)
    net.train()
    for _ in range(40):
        optimizer.zero_grad()
        net.base_losses(normals[torch.randint(0, 32, (8,))]).loss.backward()
        optimizer.step()
    net.unet.eval().requires_grad_(False)
    net.start_fader(torch.cat([net.unmasked_base_errors(normals[i:i + 8]) for i in range(0, 32, 8)]))
    optimizer = torch.optim.Adam([*net.attenuator.parameters(), *net.gated_decoder.parameters()], lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        net.fader_losses(normals[torch.randint(0, 32, (8,))]).loss.backward()
        optimizer.step()
    net.eval()

    test = _phase_textures(8, seed=5)
    defective = test.clone()
    row, col = grid - 3, grid // 2
    defective[..., row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] = \
        torch.tensor([0.9, 0.2, 0.2]).view(1, 3, 1, 1)
    scores = {}
    with torch.no_grad():
        assert float(net.patch_mask(defective)[:, 0, row, col].sum()) == 0.0  # the mask missed the defect
        for gates in (True, False):
            net.gates = gates
            scores[gates] = (net.predict(defective).pred_score, net.predict(test).pred_score)
    (defect_on, normal_on), (defect_off, normal_off) = scores[True], scores[False]
    assert float(defect_on.mean()) > float(defect_off.mean()), (defect_on, defect_off)
    margin_on = float(defect_on.min() - normal_on.max())
    margin_off = float(defect_off.min() - normal_off.max())
    assert margin_on > margin_off, (margin_on, margin_off)
