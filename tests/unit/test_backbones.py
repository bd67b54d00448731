"""Offline-first backbone weights and the frozen feature extractor."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from uad_plugins.components.backbones import (
    LITE0,
    FrozenFeatureExtractor,
    backbone_normalization,
    create_feature_extractor,
    lite0_imagenet_state_dict,
)
from uad_plugins.errors import ConfigError, WeightsError

SHARED_LITE0 = Path(__file__).resolve().parents[3] / "shared" / "weights" / "tf_efficientnet_lite0.safetensors"


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def test_lite0_weights_load_offline_with_strict_keys() -> None:
    import timm

    model = timm.create_model(LITE0, pretrained=False)
    model.load_state_dict(lite0_imagenet_state_dict(), strict=True)
    assert lite0_imagenet_state_dict() is lite0_imagenet_state_dict()  # cached in-process


@pytest.mark.shared_data
def test_lite0_weights_equal_shared_safetensors() -> None:
    if not SHARED_LITE0.is_file():
        pytest.skip(f"{SHARED_LITE0} not present")
    from safetensors.torch import load_file

    shared = load_file(str(SHARED_LITE0))
    converted = lite0_imagenet_state_dict()
    assert set(shared) == set(converted)
    assert all(torch.equal(shared[k], converted[k]) for k in shared)


def test_lite0_imagenet_prediction_is_sensible() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    import timm
    import torch.nn.functional as F

    try:
        image = skimage_data.coffee()
    except Exception as exc:  # noqa: BLE001 - the sample may need a download
        pytest.skip(f"skimage sample not available offline: {exc}")
    model = timm.create_model(LITE0, pretrained=False).eval()
    model.load_state_dict(lite0_imagenet_state_dict(), strict=True)
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0)
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        probs = model((x - 0.5) / 0.5).softmax(-1)
    assert int(probs.argmax()) == 967  # ImageNet class 967: espresso
    assert float(probs.max()) > 0.5


def test_feature_extractor_pretrained_lite0_shapes_and_frozen() -> None:
    extractor = create_feature_extractor(LITE0, ["blocks.4", "blocks.2"], pretrained=True)
    assert isinstance(extractor, FrozenFeatureExtractor)
    assert extractor.channels == [112, 40] and extractor.reductions == [16, 8]
    feats = extractor(torch.rand(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 112, 4, 4), (2, 40, 8, 8)]
    assert not any(p.requires_grad for p in extractor.parameters())
    # pretrained BatchNorm statistics, not the 0/1 of a fresh model
    bn = extractor.model.bn1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    # stays in eval mode inside a parent put in train mode
    parent = nn.Sequential(extractor)
    parent.train()
    assert not any(m.training for m in extractor.modules())
    before = bn.running_mean.clone()
    extractor(torch.rand(2, 3, 64, 64))
    assert torch.equal(before, bn.running_mean)


def test_feature_extractor_exports() -> None:
    extractor = create_feature_extractor(LITE0, ["blocks.2", "blocks.4"], pretrained=False)
    exported = torch.export.export(extractor, (torch.rand(1, 3, 64, 64),))
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(exported.module()(x), extractor(x), strict=True):
        torch.testing.assert_close(a, b)


def test_pretrained_false_random_init() -> None:
    extractor = create_feature_extractor("resnet18", ["layer2", "layer3"], pretrained=False)
    assert extractor.channels == [128, 256]
    feats = extractor(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 8), (4, 4)]


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file(tmp_path: Path, suffix: str) -> None:
    import timm

    source = timm.create_model("resnet18", pretrained=False)
    with torch.no_grad():
        source.conv1.weight.fill_(0.125)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)  # nested state dicts are unwrapped
    extractor = create_feature_extractor("resnet18", ["layer2"], pretrained=str(path))
    assert torch.all(extractor.model.conv1.weight == 0.125)
    torch.testing.assert_close(extractor.model.layer2[0].conv1.weight, source.layer2[0].conv1.weight)


def test_missing_weights_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError, match=r"nope\.safetensors"):
        create_feature_extractor("resnet18", ["layer2"], pretrained=str(missing))


def test_weights_file_with_wrong_keys(tmp_path: Path) -> None:
    import timm

    path = tmp_path / "lite0.pth"
    torch.save(timm.create_model(LITE0, pretrained=False).state_dict(), path)
    with pytest.raises(WeightsError) as info:
        create_feature_extractor("resnet18", ["layer2"], pretrained=path)
    message = str(info.value)
    assert "missing" in message and "conv1.weight" in message
    assert "unexpected" in message and "blocks." in message


def test_weights_file_with_wrong_shapes(tmp_path: Path) -> None:
    import timm

    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"conv1\.weight"):
        create_feature_extractor("resnet18", ["layer2"], pretrained=path)


def test_backbone_without_offline_weights_fails_fast_with_remedies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        create_feature_extractor("resnet18", ["layer2", "layer3"], pretrained=True)
    assert time.perf_counter() - start < 30
    message = str(info.value)
    assert "resnet18" in message and "offline" in message
    assert "--model.backbone tf_efficientnet_lite0" in message
    assert "--model.pretrained /path/to/weights.safetensors" in message
    assert "--model.pretrained false" in message


def test_unknown_layer_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"layer2.*blocks\.2"):
        create_feature_extractor(LITE0, ["layer2"], pretrained=False)


def test_unknown_backbone_suggests_close_matches() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        create_feature_extractor("resnet_18", ["layer2"], pretrained=False)


def test_backbone_normalization() -> None:
    assert backbone_normalization(LITE0) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert backbone_normalization("wide_resnet50_2") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_unreachable_hub_goes_offline_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE, an endpoint that cannot be reached (a closed local port: no network is touched)
    switches the hub to offline mode for the call, so missing weights fail in seconds, not after a minute of
    retries; the hub's own setting is restored afterwards."""
    import huggingface_hub.constants as hub_constants

    from uad_plugins.components.backbones import hub_offline_unless_reachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    with hub_offline_unless_reachable():
        assert hub_constants.HF_HUB_OFFLINE is True
    assert hub_constants.HF_HUB_OFFLINE is False
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="offline"):
        create_feature_extractor("resnet18", ["layer2"], pretrained=True)
    assert time.perf_counter() - start < 15
