"""HetNet plugin: teachers (CNN + ViT, weights sources), fusion and students, noise fitting, losses, maps, export,
settings, Lightning fit and checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch

from uad_plugins.errors import ConfigError, WeightsError
from uad_plugins.plugins.hetnet.model import HetNet
from uad_plugins.plugins.hetnet.torch_model import (
    GaussianBlur2d,
    HetNetModel,
    HetNetTrainOutput,
    ViTTeacher,
    cosine_distance,
)

TINY = {"pretrained": False, "vit_pretrained": False, "image_size": 64, "vit_layers": [1], "fusion_dim": 16,
        "embed_dim": 32}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def tiny_net(**overrides: object) -> HetNetModel:
    torch.manual_seed(0)
    return HetNetModel(**{**TINY, **overrides})


def textures(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth, similar 'normal' images (already normalised around 0): stripes with a little noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 8 * torch.pi, size)
    base = (0.5 * torch.sin(x)[None, :] * torch.cos(x)[:, None]).expand(3, size, size)
    return base + 0.1 * torch.randn(n, 3, size, size, generator=gen)


@pytest.fixture(scope="module")
def fitted_net() -> HetNetModel:
    torch.set_num_threads(2)
    net = tiny_net()
    net.fit_noise([textures(4, seed=1), textures(4, seed=2)])
    return net


# ---------------------------------------------------------------------------------------------- network
def test_teachers_levels_and_frozen_parts(fitted_net: HetNetModel) -> None:
    net = fitted_net
    assert net.level_sizes == [(16, 16), (8, 8), (4, 4)]  # Lite0 blocks.1/2/4 at 64 px: strides 4, 8, 16
    assert net.cnn.channels == [24, 40, 112]
    assert net.vit.grid == (4, 4) and net.vit.channels == 192 and len(net.vit.model.blocks) == 2  # pruned at block 1
    local, glob = net.teachers(textures(2))
    assert [tuple(f.shape) for f in local] == [(2, 24, 16, 16), (2, 40, 8, 8), (2, 112, 4, 4)]
    assert glob.shape == (2, 192, 4, 4)
    assert not any(p.requires_grad for p in net.cnn.parameters())
    assert not any(p.requires_grad for p in net.vit.parameters())
    net.train()
    assert not net.cnn.training and not net.vit.training and net.fusion.training
    net.eval()
    trainable = {name.split(".")[0] for name, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"fusion", "hybrid", "sr_embedding", "sd_embedding", "sr", "sd"}


def test_eval_output_is_a_smoothed_multiscale_map_and_its_max(fitted_net: HetNetModel) -> None:
    net = fitted_net.eval()
    images = textures(2)
    with torch.no_grad():
        out = net(images)
        maps = net.student_maps(images)
        local, glob = net.teachers(images)
        sr = net.sr(net.sr_embedding(net.fuse(local, glob)), net.level_sizes)
    assert isinstance(out, InferenceBatch)
    assert out.pred_score.shape == (2,) and out.anomaly_map.shape == (2, 1, 64, 64)
    assert torch.isfinite(out.anomaly_map).all() and (out.anomaly_map >= 0).all()
    torch.testing.assert_close(out.pred_score, out.anomaly_map.amax(dim=(1, 2, 3)))
    assert set(maps) == {"sr", "sd"}
    torch.testing.assert_close(out.anomaly_map, net.blur((maps["sr"] + maps["sd"]) / 2))
    expected_sr = sum(F.interpolate(1 - F.cosine_similarity(t, s, dim=1)[:, None], size=(64, 64), mode="bilinear",
                                    align_corners=False) for t, s in zip(local, sr, strict=True))
    torch.testing.assert_close(maps["sr"], expected_sr, rtol=1e-4, atol=1e-5)


def test_score_students_choice_and_training_needs_fitted_noise() -> None:
    net = tiny_net(score_students="sd").train()
    images = textures(1)
    with pytest.raises(RuntimeError, match="fit_noise"):
        net(images)
    net.eval()
    with torch.no_grad():
        maps = net.student_maps(images)
        out = net(images)
    assert set(maps) == {"sd"}
    torch.testing.assert_close(out.anomaly_map, net.blur(maps["sd"]))


def test_cosine_distance_and_blur() -> None:
    a, b = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(cosine_distance(a, b), 1 - F.cosine_similarity(a, b, dim=1)[:, None])
    torch.testing.assert_close(cosine_distance(a, 3 * a), torch.zeros(2, 1, 3, 3), atol=1e-6, rtol=0)
    blur = GaussianBlur2d(4.0)
    assert blur.radius == 16 and blur.kernel_h.sum().item() == pytest.approx(1.0)
    flat = torch.full((1, 1, 20, 20), 0.7)
    torch.testing.assert_close(blur(flat), flat)
    assert GaussianBlur2d(0.0)(flat) is flat


def test_noise_fit_per_level_and_same_region_at_every_level(fitted_net: HetNetModel) -> None:
    net = fitted_net
    assert net.noise_fitted
    assert [s.shape for s in net.noise] == [(24, 16, 16), (40, 8, 8), (112, 4, 4)]
    assert all(s.count == 8 for s in net.noise)
    local, _ = net.teachers(textures(3))
    torch.manual_seed(3)
    noisy, fraction = net.add_noise(local)
    assert 0 < float(fraction) < 1
    masks = []
    for clean, dirty in zip(local, noisy, strict=True):
        changed = (dirty - clean).abs().amax(dim=1) > 0
        assert changed.flatten(1).any(dim=1).all()  # every image got noise at every level
        masks.append(F.interpolate(changed[:, None].float(), size=(64, 64), mode="nearest"))
    fine, coarse = masks[0], masks[2]
    # the same boxes in image coordinates: the fine level's noise lies mostly inside the coarse level's
    assert float((fine * coarse).sum() / fine.sum()) > 0.5


def test_losses_and_what_the_denoising_term_trains(fitted_net: HetNetModel) -> None:
    net = fitted_net
    images = textures(4)

    def grads(weight: float) -> dict[str, torch.Tensor]:
        net.zero_grad()
        net.denoise_weight = weight
        net.train()
        torch.manual_seed(7)
        out = net(images)
        assert isinstance(out, HetNetTrainOutput)
        torch.testing.assert_close(out.loss.detach(), out.sr_loss + weight * out.sd_loss)
        out.loss.backward()
        return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in net.named_parameters()
                if p.requires_grad}

    try:
        single, double, off = grads(1.0), grads(2.0), grads(0.0)
    finally:
        net.denoise_weight = 1.0
        net.zero_grad()
        net.eval()
    for name in single:
        if name.startswith(("sr.", "sr_embedding.")):  # SD learns SR's output, detached: SR is trained by SR only
            torch.testing.assert_close(double[name], single[name], rtol=1e-4, atol=1e-7)
        if name.startswith(("sd.", "sd_embedding.")):
            torch.testing.assert_close(double[name], 2 * single[name], rtol=1e-4, atol=1e-7)
            assert float(single[name].abs().sum()) > 0 and float(off[name].abs().sum()) == 0, name
    fusion = [n for n in single if n.startswith("fusion.")]
    assert any(not torch.allclose(double[n], single[n]) for n in fusion)  # the shared fusion learns from both


@pytest.mark.slow
def test_optimisation_reduces_the_loss() -> None:
    net = tiny_net()
    images = textures(2)
    net.fit_noise([images])
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.005, betas=(0.5, 0.999))
    net.train()
    losses = []
    torch.manual_seed(0)
    for _ in range(6):
        optimiser.zero_grad()
        out = net(images)
        out.loss.backward()
        optimiser.step()
        losses.append(out.loss.item())
    assert np.mean(losses[-2:]) < 0.5 * np.mean(losses[:2])


@pytest.mark.slow
def test_export_traceable(fitted_net: HetNetModel) -> None:
    net = fitted_net.eval()
    x = textures(2)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=16)},)
    exported = torch.export.export(net, (x,), dynamic_shapes=dynamic, strict=False)
    with torch.no_grad():
        want = net(x)
        got = exported.module()(textures(3)[:2])
    torch.testing.assert_close(got.pred_score, want.pred_score)
    torch.testing.assert_close(got.anomaly_map, want.anomaly_map)


# ---------------------------------------------------------------------------------------------- ViT teacher
def test_vit_normalisation_is_converted() -> None:
    teacher = ViTTeacher("deit_tiny_patch16_224", [0], 32, False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    raw = torch.rand(1, 3, 4, 4)
    lite0_input = (raw - 0.5) / 0.5
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(lite0_input * teacher.scale + teacher.shift, (raw - mean) / std)


def test_vit_local_weights_file_any_size_and_prefix(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False)  # 224 px, with its classifier head
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "vit.safetensors"))
    torch.save({f"model.{k}": v for k, v in state.items()}, tmp_path / "vit_features.pt")
    for name in ("vit.safetensors", "vit_features.pt"):
        teacher = ViTTeacher("vit_tiny_patch16_224", [0, 2], 64, str(tmp_path / name), (0.5,) * 3, (0.5,) * 3)
        loaded = teacher.model.state_dict()
        torch.testing.assert_close(loaded["blocks.2.mlp.fc1.weight"], state["blocks.2.mlp.fc1.weight"])
        torch.testing.assert_close(loaded["cls_token"], state["cls_token"])
        assert loaded["pos_embed"].shape == (1, 1 + 16, 192)  # 224 px table resampled to 4x4 patches
        assert "blocks.3.norm1.weight" not in loaded  # pruned after the deepest used block
    resnet = timm.create_model("resnet18", pretrained=False)
    save_file(resnet.state_dict(), str(tmp_path / "resnet.safetensors"))
    with pytest.raises(WeightsError, match="do not fit the ViT teacher"):
        ViTTeacher("vit_tiny_patch16_224", [0], 64, str(tmp_path / "resnet.safetensors"), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(WeightsError, match="not found"):
        ViTTeacher("vit_tiny_patch16_224", [0], 64, str(tmp_path / "none.safetensors"), (0.5,) * 3, (0.5,) * 3)


def test_vit_hub_weights_come_through_the_core_feature_extractor(monkeypatch: pytest.MonkeyPatch) -> None:
    """``vit_pretrained: true`` takes the weights the core's hub path delivers (a timm feature wrapper whose keys
    carry a ``model.`` prefix, built at 224 px). The hub cannot be reached here, so the core function is called with
    random weights in its place; everything after it is the real code path."""
    import uad_plugins.plugins.hetnet.torch_model as torch_model
    from uad_plugins.components.backbones import create_feature_extractor

    delivered = {}

    def hub(backbone: str, layers: list[str], pretrained: bool) -> object:
        assert pretrained is True and layers == ["blocks.2"]  # the deepest used block
        torch.manual_seed(5)
        extractor = create_feature_extractor(backbone, layers, pretrained=False)
        delivered.update(extractor.model.state_dict())
        return extractor

    monkeypatch.setattr(torch_model, "create_feature_extractor", hub)
    teacher = ViTTeacher("vit_tiny_patch16_224", [2, 0], 32, True, (0.5,) * 3, (0.5,) * 3)
    loaded = teacher.model.state_dict()
    torch.testing.assert_close(loaded["blocks.2.attn.qkv.weight"], delivered["model.blocks.2.attn.qkv.weight"])
    assert loaded["pos_embed"].shape == (1, 1 + 4, 192)


def test_vit_hub_weights_offline_fail_with_a_clear_weights_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        ViTTeacher("vit_tiny_patch16_224", [0], 64, True, (0.5,) * 3, (0.5,) * 3)
    assert "vit_tiny_patch16_224" in str(info.value) and "--model.vit_pretrained" in info.value.hint


# ---------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(("key", "value", "match"), [
    ("image_size", 8, "image_size"), ("image_size", 72, "multiple of the ViT patch size"),
    ("fusion_dim", 0, "fusion_dim"), ("embed_dim", -4, "embed_dim"), ("vit_layers", [], "vit_layers"),
    ("vit_layers", [2, 12], "vit_layers"), ("vit_layers", [1, 1], "vit_layers"), ("denoise_weight", -1.0, "denoise"),
    ("score_students", "teacher", "score_students"), ("lr", 0.0, "lr"), ("smoothing_sigma", -1.0, "smoothing"),
    ("noise_args", "diagonal", "noise_args"), ("max_epochs", 0, "max_epochs"),
    ("layers", ["blocks.4", "blocks.1"], "shallow to deep"), ("layers", ["layer9"], "layer9"),
    ("vit_backbone", "vit_tinny_patch16_224", "unknown ViT"), ("vit_backbone", "resnet18", "VisionTransformer"),
    ("noise_synthesizer", "plugin:perlin", "feature-map synthesizer"),
    ("noise_args", {"covariance": "spherical"}, "covariance"),
])
def test_invalid_settings(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HetNet(**{**TINY, key: value})


def test_lightning_module_defaults_and_hook() -> None:
    import inspect

    from anomalib import LearningType
    from torchvision.transforms.v2 import Normalize, Resize

    from uad_plugins.plugins.hetnet.hooks import uad_register_models

    model = HetNet(**TINY)
    transforms = model.pre_processor.transform.transforms
    assert isinstance(transforms[0], Resize) and list(transforms[0].size) == [64, 64]
    assert isinstance(transforms[1], Normalize) and list(transforms[1].mean) == [0.5, 0.5, 0.5]
    assert model.trainer_arguments == {"max_epochs": 20, "max_steps": 300, "num_sanity_val_steps": 0}
    assert model.learning_type == LearningType.ONE_CLASS
    optimiser = model.configure_optimizers()
    assert isinstance(optimiser, torch.optim.Adam) and optimiser.defaults["betas"] == (0.5, 0.999)
    assert optimiser.defaults["lr"] == 0.005
    optimised = {id(p) for group in optimiser.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.model.parameters() if p.requires_grad}
    spec = uad_register_models()
    assert spec.name == "hetnet" and spec.load() is HetNet and {"image", "exportable"} <= set(spec.tags)
    params = inspect.signature(HetNet.__init__).parameters
    defaults = spec.default_init_args()
    assert set(defaults) <= set(params)
    for key, value in defaults.items():
        default = params[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key
    assert set(spec.test_init_args()) >= set(TINY)


# ---------------------------------------------------------------------------------------------- Lightning
def _write_folder(root: Path) -> None:
    from PIL import Image

    (root / "good").mkdir(parents=True)
    (root / "bad").mkdir()
    normals = ((textures(8, size=72) * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    for i, img in enumerate(normals):
        Image.fromarray(img).save(root / "good" / f"{i:03d}.png")
    for i, img in enumerate(normals[:4]):
        img = img.copy()
        img[20 + 5 * i: 40 + 5 * i, 20:40] = (255, 0, 0)
        Image.fromarray(img).save(root / "bad" / f"{i:03d}.png")


@pytest.mark.slow
def test_lightning_fit_predict_and_checkpoint_round_trip(tmp_path: Path) -> None:
    from anomalib.data import Folder
    from anomalib.engine import Engine

    _write_folder(tmp_path / "data")
    datamodule = Folder(name="tiny", root=tmp_path / "data", normal_dir="good", abnormal_dir="bad",
                        train_batch_size=4, eval_batch_size=4, num_workers=0, seed=0)
    torch.manual_seed(0)
    # anomalib's Engine lets a model's trainer_arguments replace its own, so the length is the model's suggestion
    model = HetNet(**{**TINY, "max_epochs": 1, "max_steps": 2})
    engine = Engine(max_epochs=1, max_steps=2, logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                    accelerator="cpu")
    engine.fit(model=model, datamodule=datamodule)
    assert engine.trainer.global_step == 2
    assert model.model.noise_fitted and all(s.count > 0 for s in model.model.noise)  # fitted in on_train_start
    logged = set(engine.trainer.callback_metrics)
    assert {"sr_loss_step", "sd_loss_step", "noise_fraction_step"} <= logged or {"sr_loss", "sd_loss"} <= logged
    predictions = engine.predict(model=model, datamodule=datamodule)
    assert predictions and predictions[0].anomaly_map.shape[-2:] == (64, 64)
    ckpt = tmp_path / "hetnet.ckpt"
    engine.trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert any(k.startswith("model.vit.") for k in state) and any(k.startswith("model.cnn.") for k in state)
    loaded = HetNet.load_from_checkpoint(ckpt)
    assert not loaded.model.noise_fitted  # noise statistics are training-only, refitted when training resumes
    x = textures(2)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        want, got = model.model(x), loaded.model(x)
    torch.testing.assert_close(got.pred_score, want.pred_score)
    torch.testing.assert_close(got.anomaly_map, want.anomaly_map)


# ---------------------------------------------------------------------------------------------- ablation variants
@pytest.mark.parametrize("variant", ["cnn_only", "rd4ad"])
def test_variants_without_vit_teacher(variant: str) -> None:
    net = tiny_net(variant=variant)
    assert net.vit is None and not any(n.startswith("vit.") for n, _ in net.named_parameters())
    assert (net.sd is None) == (variant == "rd4ad")
    assert isinstance(net.hybrid, torch.nn.Identity) == (variant == "rd4ad")
    images = textures(4)
    net.fit_noise([images])
    net.train()
    out = net(images)
    assert isinstance(out, HetNetTrainOutput) and float(out.sd_loss) > 0 and float(out.noise_fraction) > 0
    torch.testing.assert_close(out.loss.detach(), out.sr_loss + out.sd_loss)
    out.loss.backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if p.requires_grad), "every part trains"
    net.eval()
    with torch.no_grad():
        maps = net.student_maps(images[:2])
        pred = net(images[:2])
    assert set(maps) == ({"sr"} if variant == "rd4ad" else {"sr", "sd"})
    assert pred.anomaly_map.shape == (2, 1, 64, 64) and pred.pred_score.shape == (2,)


@pytest.mark.parametrize("variant", ["hetnet", "cnn_only", "rd4ad"])
def test_noise_off_needs_no_fit_and_trains_the_clean_path_only(variant: str) -> None:
    net = tiny_net(variant=variant, denoise_weight=0.0, score_students="sr").train()
    assert not net.uses_noise and not net.noise_fitted
    out = net(textures(2))  # no fit_noise needed
    assert float(out.sd_loss) == 0 and float(out.noise_fraction) == 0
    torch.testing.assert_close(out.loss.detach(), out.sr_loss)


def test_rd4ad_has_no_sd_student_to_score_with() -> None:
    with pytest.raises(ConfigError, match="score_students"):
        HetNet(**{**TINY, "variant": "rd4ad", "score_students": "sd"})
    with pytest.raises(ConfigError, match="variant"):
        HetNet(**{**TINY, "variant": "vit_only"})


@pytest.mark.slow
def test_rd4ad_variant_exports() -> None:
    net = tiny_net(variant="rd4ad").eval()
    x = textures(2)
    exported = torch.export.export(net, (x,), strict=False)
    with torch.no_grad():
        want, got = net(x), exported.module()(x)
    torch.testing.assert_close(got.anomaly_map, want.anomaly_map)
