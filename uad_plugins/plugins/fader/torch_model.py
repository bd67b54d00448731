"""FADeR on the EAR inpainting base, as a plain ``nn.Module``.

The pieces, in the order an image meets them:

1. a frozen **mask source** gives a saliency value per patch: the class-token attention of a ViT's last block
   (:class:`AttentionSaliency`, EAR's DINO-ViT) or, our offline addition, the deviation of CNN features from the
   image's mean feature (:class:`FeatureSaliency`);
2. the ``mask_ratio`` most salient patches are excised: one deterministic mask per image (:func:`topk_patch_mask`);
3. the excised patches get a **mosaic hint** (pixelated copy) instead of being blanked (:func:`hint_images`);
4. a **U-Net** reconstructs the image (:class:`UNet`);
5. **FADeR** (:class:`AttenuationMLP`): two per-patch linear layers read the encoder features and give one soft gate
   per patch and skip level that multiplies the skip connection before a fine-tuned copy of the decoder sees it
   (gates held at 1 on excised patches, upsampled bilinearly).

Training has two stages (:mod:`uad_plugins.plugins.fader.model` schedules them): the base U-Net alone
(:meth:`FaderModel.base_losses`), then, with the base frozen, statistics of the base's error on the unmasked patches
of normal training images (:meth:`FaderModel.error_statistics`) and the FADeR stage (:meth:`FaderModel.fader_losses`):
the gate layers and the gated decoder copy learn on normal images with synthetic corruptions, the gate targets
coming from the frozen base's error against the clean image. The base U-Net is kept unchanged, so the same
checkpoint scores with the gates on (``gates=True``) or off (the base exactly).

The anomaly map is the reconstruction error (multi-scale gradient-magnitude similarity by default, as in RIAD, the
U-Net inpainting method EAR builds on), Gaussian smoothed; the image score is its maximum. No Lightning here (see
:mod:`uad_plugins.plugins.fader.model`).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from anomalib.models.components import GaussianBlur2d
from torch import nn

from uad_plugins.components.backbones import (
    backbone_normalization,
    build_vit,
    check_vit_name,
    create_feature_extractor,
    load_checked,
    load_weights_file,
    parse_pretrained,
    timm_from_hub,
)
from uad_plugins.errors import ConfigError

__all__ = [
    "DEFAULT_BACKBONES",
    "AttentionSaliency",
    "AttenuationMLP",
    "FaderModel",
    "FaderOutput",
    "FaderTrainOutput",
    "FeatureSaliency",
    "UNet",
    "attenuation_targets",
    "corrupt_patches",
    "create_vit",
    "describe",
    "hint_images",
    "mosaic",
    "msgms_loss",
    "msgms_map",
    "reconstruction_loss",
    "ssim_loss",
    "to_grid",
    "topk_patch_mask",
]

logger = logging.getLogger(__name__)

#: the mask network used when ``backbone`` is not given, per mask source
DEFAULT_BACKBONES = {"attention": "vit_small_patch16_224.dino", "saliency": "tf_efficientnet_lite0"}
MASK_SOURCES = ("attention", "saliency")
HINTS = ("mosaic", "blank")
MAP_METRICS = ("msgms", "l2")


class FaderOutput(NamedTuple):
    """One reconstruction pass (eval or training): what went in, what came out and the gates used."""

    reconstruction: torch.Tensor  # [B, 3, H, W] in [0, 1]
    hinted: torch.Tensor  # [B, 3, H, W]: the image with the excised patches mosaiced (or blanked)
    mask: torch.Tensor  # [B, 1, gh, gw]: 1 = excised patch
    gates: torch.Tensor | None  # [B, L, gh, gw]: FADeR's gates per patch and level, 1 on excised patches (None: off)


class FaderTrainOutput(NamedTuple):
    """One training step's losses (``attenuation_bce`` and ``gate_mean`` are zero in the base stage)."""

    loss: torch.Tensor
    reconstruction_loss: torch.Tensor
    attenuation_bce: torch.Tensor
    gate_mean: torch.Tensor
    target_mean: torch.Tensor


# ---------------------------------------------------------------------------------------------- grids and masks
def to_grid(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample ``[B, C, h, w]`` maps to ``size``: average pooling for an integer reduction, nearest repetition for
    an integer enlargement, bilinear interpolation otherwise (shapes are static, so this stays traceable)."""
    h, w = maps.shape[-2], maps.shape[-1]
    gh, gw = size
    if (h, w) == (gh, gw):
        return maps
    if h >= gh and w >= gw and h % gh == 0 and w % gw == 0:
        return F.avg_pool2d(maps, kernel_size=(h // gh, w // gw))
    if gh >= h and gw >= w and gh % h == 0 and gw % w == 0:
        return F.interpolate(maps, size=(gh, gw), mode="nearest")
    return F.interpolate(maps, size=(gh, gw), mode="bilinear", align_corners=False)


def topk_patch_mask(saliency: torch.Tensor, k: int) -> torch.Tensor:
    """The deterministic mask: 1 on the ``k`` most salient patches of each image, 0 elsewhere (``[B, 1, gh, gw]``).

    ``k`` is a Python int, so the number of excised patches is the same for every image and the graph is static.
    """
    batch, _, gh, gw = saliency.shape
    flat = saliency.reshape(batch, gh * gw)
    index = torch.topk(flat, k, dim=1).indices
    mask = torch.zeros_like(flat).scatter(1, index, 1.0)
    return mask.reshape(batch, 1, gh, gw)


def mosaic(images: torch.Tensor, block: int) -> torch.Tensor:
    """Pixelate: the mean of every ``block x block`` cell, repeated over the cell."""
    return F.interpolate(F.avg_pool2d(images, block), scale_factor=block, mode="nearest")


def hint_images(images: torch.Tensor, pixel_mask: torch.Tensor, hint: str, mosaic_size: int) -> torch.Tensor:
    """Excise the masked pixels and fill them with a mosaic hint (EAR) or zeros (``hint='blank'``, binary masking)."""
    keep = images * (1.0 - pixel_mask)
    if hint == "blank":
        return keep
    return keep + mosaic(images, mosaic_size) * pixel_mask


# ---------------------------------------------------------------------------------------------- error measures
def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


_PREWITT_X = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3.0


def _gradient_magnitude(gray: torch.Tensor) -> torch.Tensor:
    kx = _PREWITT_X.to(gray.device, gray.dtype).view(1, 1, 3, 3)
    ky = kx.transpose(-1, -2)
    gx = F.conv2d(gray, kx, padding=1)
    gy = F.conv2d(gray, ky, padding=1)
    return torch.sqrt(gx * gx + gy * gy + 1e-12)


def _gms(a: torch.Tensor, b: torch.Tensor, c: float = 0.0026) -> torch.Tensor:
    """Gradient-magnitude similarity of two RGB images (on their grey mean), ``[B, 1, H, W]`` in (0, 1]."""
    ga = _gradient_magnitude(a.mean(dim=1, keepdim=True))
    gb = _gradient_magnitude(b.mean(dim=1, keepdim=True))
    return (2 * ga * gb + c) / (ga * ga + gb * gb + c)


def msgms_map(images: torch.Tensor, reconstruction: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Multi-scale GMS distance ``1 - GMS`` at full resolution: the mean over ``scales`` halvings, each map upsampled
    bilinearly to the input size (``[B, 1, H, W]``)."""
    size = (images.shape[-2], images.shape[-1])
    total = torch.zeros_like(images[:, :1])
    a, b = images, reconstruction
    for scale in range(scales):
        if scale > 0:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        distance = 1.0 - _gms(a, b)
        total = total + (distance if scale == 0 else F.interpolate(distance, size=size, mode="bilinear",
                                                                   align_corners=False))
    return total / scales


def msgms_loss(images: torch.Tensor, reconstruction: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Mean multi-scale GMS distance (the GMS term of RIAD's loss)."""
    total = images.new_zeros(())
    a, b = images, reconstruction
    for scale in range(scales):
        if scale > 0:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        total = total + (1.0 - _gms(a, b)).mean()
    return total / scales


def ssim_loss(images: torch.Tensor, reconstruction: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """``1 - SSIM`` (Gaussian window 11, sigma 1.5, data range 1, per channel, zero padding)."""
    return ssim_map(images, reconstruction, window, sigma).mean()


def reconstruction_loss(images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """RIAD's reconstruction loss, which EAR trains with: ``L2 + MSGMS + (1 - SSIM)`` with unit weights."""
    return (F.mse_loss(reconstruction, images) + msgms_loss(images, reconstruction)
            + ssim_loss(images, reconstruction))


def masked_reconstruction_loss(images: torch.Tensor, reconstruction: torch.Tensor,
                               weight: torch.Tensor) -> torch.Tensor:
    """:func:`reconstruction_loss` with the per-pixel terms averaged over ``weight`` ``[B, 1, H, W]`` only (the
    multi-scale GMS term as the mean of :func:`msgms_map`, the SSIM term on the per-pixel SSIM map)."""
    total = weight.sum().clamp_min(1.0)

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weight).sum() / total

    squared = ((images - reconstruction) ** 2).mean(dim=1, keepdim=True)
    return mean(squared) + mean(msgms_map(images, reconstruction)) + mean(ssim_map(images, reconstruction))


def ssim_map(images: torch.Tensor, reconstruction: torch.Tensor, window: int = 11,
             sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel ``1 - SSIM`` averaged over the channels (``[B, 1, H, W]``; settings as :func:`ssim_loss`)."""
    channels = images.shape[1]
    kernel = _gaussian_window(window, sigma).to(images.device, images.dtype).expand(channels, 1, window, window)
    pad = window // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, padding=pad, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(images), blur(reconstruction)
    var_a = blur(images * images) - mu_a**2
    var_b = blur(reconstruction * reconstruction) - mu_b**2
    cov = blur(images * reconstruction) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return (1.0 - ssim).mean(dim=1, keepdim=True)


def corrupt_patches(images: torch.Tensor, patch_size: int, rate: float,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic defects for the FADeR stage (ours): ``(corrupted images, patch mask [B, 1, gh, gw])``.

    Each patch is corrupted with probability ``rate`` (at least one per image): its pixels are replaced by another
    image's content (the batch rolled by one, shifted by a random number of patches), scaled and offset by a random
    colour change, with Gaussian noise on half the images. The clean image stays the reconstruction target.
    """
    batch, _, height, width = images.shape
    gh, gw = height // patch_size, width // patch_size
    device = images.device
    chosen = (torch.rand(batch, 1, gh, gw, generator=generator) < rate).float()
    first = torch.randint(gh * gw, (batch,), generator=generator)
    chosen.view(batch, -1)[torch.arange(batch), first] = 1.0
    shift = (int(torch.randint(1, gh, (1,), generator=generator)) * patch_size,
             int(torch.randint(1, gw, (1,), generator=generator)) * patch_size)
    source = torch.roll(images.roll(1, dims=0), shifts=shift, dims=(2, 3))
    scale = 0.6 + 0.8 * torch.rand(batch, 3, 1, 1, generator=generator)
    offset = 0.3 * (torch.rand(batch, 3, 1, 1, generator=generator) - 0.5)
    noisy = (torch.rand(batch, 1, 1, 1, generator=generator) < 0.5).float()
    noise = 0.1 * torch.randn(images.shape, generator=generator) * noisy
    fake = (source * scale.to(device) + offset.to(device) + noise.to(device)).clamp(0.0, 1.0)
    pixel_mask = F.interpolate(chosen.to(device), scale_factor=patch_size, mode="nearest")
    return images * (1.0 - pixel_mask) + fake * pixel_mask, chosen.to(device)


def attenuation_targets(patch_errors: torch.Tensor, low: torch.Tensor | float,
                        high: torch.Tensor | float) -> torch.Tensor:
    """Gate targets in [0, 1] from per-patch errors, scaled against the normal training errors: 1 (open) up to
    ``low``, 0 (shut) from ``high`` on, linear in between."""
    span = torch.as_tensor(high) - torch.as_tensor(low)
    return ((high - patch_errors) / span.clamp_min(1e-8)).clamp(0.0, 1.0)


def error_map(images: torch.Tensor, reconstruction: torch.Tensor, metric: str) -> torch.Tensor:
    """Per-pixel reconstruction error ``[B, 1, H, W]``: ``1 - MSGMS`` or the channel-mean squared error."""
    if metric == "l2":
        return ((images - reconstruction) ** 2).mean(dim=1, keepdim=True)
    return msgms_map(images, reconstruction)


# ---------------------------------------------------------------------------------------------- mask sources
class _FrozenSource(nn.Module):
    """A frozen network that always stays in eval mode; inputs are [0, 1] images, normalised here."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        mean, std = backbone_normalization(backbone)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _FrozenSource:
        """Stay in eval mode whatever the parent asks."""
        return super().train(False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def _vit_supported(model: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer) or getattr(model, "cls_token", None) is None:
        return False
    attn = getattr(model.blocks[-1], "attn", None)
    return attn is not None and hasattr(attn, "qkv") and hasattr(attn, "num_heads") and hasattr(attn, "head_dim")


def create_vit(backbone: str, pretrained: bool | str | os.PathLike[str]) -> nn.Module:
    """A timm ViT (no classifier head) for the attention mask.

    ``pretrained``: ``False`` = random initialisation; a path = a local weights file (timm/DINO key names, checked
    key by key); ``True`` = timm's hub (a :class:`WeightsError` when it cannot deliver, e.g. offline).
    """
    pretrained = parse_pretrained(pretrained)
    if pretrained is True:
        check_vit_name(backbone, owner="fader", role="attention ViT")
        model = timm_from_hub(
            backbone, f"fader: the attention ViT '{backbone}' has no pretrained weights offline",
            "What to do, any one of:\n"
            f"  - pass a local weights file: --model.pretrained /path/to/{backbone.split('.')[0]}.pth "
            "(DINO's released checkpoints use timm's key names);\n"
            "  - use the offline feature-saliency mask: --model.mask_source saliency "
            "(EfficientNet-Lite0 ImageNet weights ship with the install);\n"
            "  - keep a randomly initialised ViT: --model.pretrained false.", num_classes=0)
    else:
        model = build_vit(backbone, owner="fader", role="attention ViT")
        if isinstance(pretrained, str | os.PathLike) and not isinstance(pretrained, bool):
            path = Path(pretrained).expanduser()
            load_checked(model, load_weights_file(path), what=f"fader: weights in {str(path)!r} do not fit the ViT "
                         f"'{backbone}'", hint="Give a checkpoint made for this ViT (same patch size, width and "
                         "input size), or choose the matching --model.backbone.")
            logger.info("fader: attention ViT '%s' loaded weights from %s.", backbone, path)
        elif pretrained is False:
            logger.warning("fader: the attention ViT '%s' is randomly initialised (pretrained=false): its attention "
                           "is a fixed, image-dependent pattern, not DINO's saliency. Pass --model.pretrained PATH "
                           "or use --model.mask_source saliency for a meaningful mask.", backbone)
        else:
            raise ConfigError(f"fader: pretrained must be true, false or a path, got {pretrained!r}.")
    if not _vit_supported(model):
        raise ConfigError(
            f"fader: '{backbone}' is not a timm VisionTransformer with a class token and a standard attention block, "
            "so its class-token attention cannot be read.",
            hint="Use a plain ViT such as vit_small_patch16_224.dino or vit_small_patch8_224.dino, "
            "or --model.mask_source saliency.")
    return model


class AttentionSaliency(_FrozenSource):
    """EAR's mask source: the class-token attention of a frozen ViT's last block, averaged over heads.

    The image is resized to the ViT's input size; the result is the ViT's patch grid ``[B, 1, gh, gw]`` (softmax
    weights, so each image's values sum to at most one).
    """

    def __init__(self, backbone: str, pretrained: bool | str) -> None:
        super().__init__(backbone)
        self.vit = create_vit(backbone, pretrained)
        if getattr(self.vit, "dynamic_img_size", False):
            # images are resized to the native input size, so the position table never needs resampling (timm's
            # resampling uses antialiased bicubic interpolation, which OpenVINO cannot convert)
            self.vit.dynamic_img_size = False
            self.vit.patch_embed.flatten = True
        self.input_size = tuple(int(s) for s in self.vit.patch_embed.img_size)
        self.grid = tuple(int(s) for s in self.vit.patch_embed.grid_size)
        self._freeze()

    def cls_attention(self, images: torch.Tensor) -> torch.Tensor:
        """The class token's attention row in the last block, per head, over all tokens ``[B, heads, N]``."""
        x = self.normalise(images)
        if (x.shape[-2], x.shape[-1]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        vit = self.vit
        tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        for block in vit.blocks[:-1]:
            tokens = block(tokens)
        last = vit.blocks[-1]
        attn = last.attn
        hidden = last.norm1(tokens)
        batch, length, _ = hidden.shape
        qkv = attn.qkv(hidden).reshape(batch, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        return ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Head-averaged class-token attention to the patch tokens, on the ViT's grid ``[B, 1, gh, gw]``."""
        patches = self.cls_attention(images)[:, :, self.vit.num_prefix_tokens:].mean(dim=1)
        return patches.reshape(images.shape[0], 1, *self.grid)


class FeatureSaliency(_FrozenSource):
    """Our offline mask source: how far each location's CNN feature is from the image's mean feature.

    For each layer, ``||f(p) - mean_p f||`` divided by its spatial mean (scale-free); layers are resampled to the
    first layer's grid and averaged (``[B, 1, h, w]``). Regions that differ from the rest of the image (objects,
    edges, and defects) score high, which is the role DINO's attention plays in EAR.
    """

    def __init__(self, backbone: str, layers: Sequence[str], pretrained: bool | str) -> None:
        super().__init__(backbone)
        self.extractor = create_feature_extractor(backbone, list(layers), pretrained)
        self._freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.extractor(self.normalise(images))
        size = (maps[0].shape[-2], maps[0].shape[-1])
        total = torch.zeros_like(maps[0][:, :1])
        for fmap in maps:
            deviation = torch.linalg.vector_norm(fmap - fmap.mean(dim=(2, 3), keepdim=True), dim=1, keepdim=True)
            deviation = deviation / (deviation.mean(dim=(2, 3), keepdim=True) + 1e-6)
            total = total + to_grid(deviation, size)
        return total / len(maps)


# ---------------------------------------------------------------------------------------------- reconstructor
def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A plain U-Net: ``depth`` levels of two conv3x3-BN-ReLU, max-pool down, transposed-conv up, concatenated
    skips, a 1x1 head and a sigmoid (RGB output in [0, 1]).

    Level ``i`` has ``base_channels * 2**i`` channels at stride ``2**i``; levels ``0 .. depth-2`` send skip
    connections, level ``depth-1`` is the bottleneck.
    """

    def __init__(self, base_channels: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.channels = [base_channels * 2**i for i in range(depth)]
        ch = self.channels
        self.down = nn.ModuleList([_conv_block(3 if i == 0 else ch[i - 1], ch[i]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in range(depth - 1)])
        self.fuse = nn.ModuleList([_conv_block(2 * ch[i], ch[i]) for i in range(depth - 1)])
        self.head = nn.Conv2d(ch[0], 3, 1)

    @property
    def skip_channels(self) -> list[int]:
        return self.channels[:-1]

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every level's features, shallow to deep (the last one is the bottleneck)."""
        features = []
        x = images
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            features.append(x)
        return features

    def decoder(self) -> nn.ModuleDict:
        """The decoder's modules (``up``, ``fuse``, ``head``) as one module, e.g. to copy them."""
        return nn.ModuleDict({"up": self.up, "fuse": self.fuse, "head": self.head})

    def decode(self, features: Sequence[torch.Tensor], gates: Sequence[torch.Tensor] | None = None,
               decoder: nn.Module | None = None) -> torch.Tensor:
        """Reconstruction from the encoder features; ``gates[i]`` (broadcastable) multiplies skip ``i``;
        ``decoder``: another module with ``up``, ``fuse`` and ``head`` of the same shapes (default: this one's)."""
        parts = self if decoder is None else decoder
        x = features[-1]
        for i in reversed(range(len(parts.up))):
            skip = features[i] if gates is None else features[i] * gates[i]
            x = parts.fuse[i](torch.cat([parts.up[i](x), skip], dim=1))
        return torch.sigmoid(parts.head(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


class AttenuationMLP(nn.Module):
    """FADeR: two per-patch linear layers (``Linear(C, hidden) - ReLU - Linear(hidden, L)``, as 1x1 convolutions on
    the patch grid) giving one gate logit per patch and attenuated skip level.

    The last bias starts at ``init_bias`` (sigmoid 0.95 for 3) so the gates start almost open; the weights are drawn
    from a private generator (``seed``), so building FADeR does not move the global random state (a base trained
    with and without FADeR sees the same initialisation and the same batches).
    """

    def __init__(self, in_channels: int, hidden: int, levels: int, init_bias: float = 3.0, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.fc1 = nn.Conv2d(in_channels, hidden, 1)
            self.act = nn.ReLU(inplace=True)
            self.fc2 = nn.Conv2d(hidden, levels, 1)
            nn.init.normal_(self.fc2.weight, std=0.01)
        nn.init.constant_(self.fc2.bias, init_bias)

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Gate logits ``[B, L, gh, gw]`` from per-patch descriptors ``[B, C, gh, gw]``."""
        return self.fc2(self.act(self.fc1(descriptors)))


# ---------------------------------------------------------------------------------------------- the model
class FaderModel(nn.Module):
    """EAR (single deterministic mask + mosaic hint + U-Net) with FADeR's skip attenuation.

    Args:
        mask_source: ``"attention"`` (EAR: class-token attention of a ViT) or ``"saliency"`` (ours: CNN feature
            deviation, works offline with the Lite0 weights).
        backbone: the mask network (timm name); ``None`` picks :data:`DEFAULT_BACKBONES` for the source.
        layers: feature layers of the saliency backbone (ignored by the attention source).
        pretrained: weights of the mask network: ``True``, ``False`` or a local file.
        image_size: square input side.
        patch_size: side of a mask / attenuation patch in pixels (a power of two dividing ``image_size``).
        mask_ratio: fraction of patches excised per image.
        hint: ``"mosaic"`` (EAR) or ``"blank"`` (binary masking, for the ablation).
        mosaic_size: pixelation block of the hint.
        base_channels, depth: U-Net width and number of levels.
        attenuation: ``False`` builds the plain EAR base (no FADeR module).
        attenuation_hidden: hidden width of FADeR's MLP.
        gates: apply FADeR at inference (``False`` scores with the base U-Net alone; only read once FADeR has been
            trained). A plain attribute, :attr:`gates`, so one trained model can be scored both ways.
        corruption_rate: share of patches given a synthetic defect in the FADeR stage (:func:`corrupt_patches`).
        target_quantile: the gate target is 1 up to this quantile of the base's error on unmasked patches of normal
            training images and falls linearly to 0 at ``2 * q - median`` (:func:`attenuation_targets`).
        anomaly_map: ``"msgms"`` (1 - multi-scale GMS) or ``"l2"``.
        smoothing_sigma: Gaussian sigma of the anomaly map (0 = none).

    Parts: ``unet`` is the base (trained in stage 1, then frozen and never changed); ``gated_decoder`` is a copy of
    its decoder, made when the FADeR stage starts and fine-tuned there with the gates; ``attenuator`` is FADeR.

    Eval mode: ``forward(images) -> InferenceBatch(pred_score [B], anomaly_map [B, 1, H, W])``. Training goes through
    :meth:`base_losses` (stage 1), :meth:`start_fader` with :meth:`error_statistics`, and :meth:`fader_losses`.
    """

    def __init__(
        self,
        mask_source: str = "attention",
        backbone: str | None = None,
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        pretrained: bool | str = False,
        image_size: int = 256,
        patch_size: int = 16,
        mask_ratio: float = 0.25,
        hint: str = "mosaic",
        mosaic_size: int = 8,
        base_channels: int = 16,
        depth: int = 4,
        attenuation: bool = True,
        attenuation_hidden: int = 64,
        gates: bool = True,
        corruption_rate: float = 0.05,
        target_quantile: float = 0.99,
        anomaly_map: str = "msgms",
        smoothing_sigma: float = 4.0,
    ) -> None:
        super().__init__()
        if mask_source not in MASK_SOURCES:
            raise ConfigError(f"fader: mask_source={mask_source!r} is not usable; it must be one of {MASK_SOURCES}.",
                              hint="Fix --model.mask_source.")
        self.mask_source_name = mask_source
        self.backbone = backbone or DEFAULT_BACKBONES[mask_source]
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.grid = (self.image_size // self.patch_size, self.image_size // self.patch_size)
        patches = self.grid[0] * self.grid[1]
        self.num_masked = round(mask_ratio * patches)
        if not 1 <= self.num_masked <= patches - 1:
            raise ConfigError(
                f"fader: mask_ratio={mask_ratio} excises {self.num_masked} of the {patches} patches "
                f"({self.grid[0]}x{self.grid[1]} grid of {self.patch_size}-px patches): "
                + ("nothing is left to reconstruct." if self.num_masked < 1 else "nothing is left visible."),
                hint=f"Choose --model.mask_ratio between {1 / patches:.3g} and {(patches - 1) / patches:.3g} "
                "(or change --model.patch_size).")
        self.hint = hint
        self.mosaic_size = int(mosaic_size)
        self.anomaly_map_metric = anomaly_map
        self.attenuation = bool(attenuation)
        self.gates = bool(gates)
        self.corruption_rate = float(corruption_rate)
        self.target_quantile = float(target_quantile)

        if mask_source == "attention":
            self.mask_source: nn.Module = AttentionSaliency(self.backbone, pretrained)
        else:
            self.mask_source = FeatureSaliency(self.backbone, layers, pretrained)

        self.unet = UNet(base_channels, depth)
        self.skip_strides = [2**i for i in range(depth - 1)]
        self.attenuator: AttenuationMLP | None = None
        self.gated_decoder: nn.ModuleDict | None = None
        if self.attenuation:
            self.attenuator = AttenuationMLP(sum(self.unet.channels), attenuation_hidden, depth - 1)
            self.gated_decoder = copy.deepcopy(self.unet.decoder())  # refreshed from the base by start_fader
        # 1 once the FADeR stage has started (statistics gathered, decoder copied); until then the gated path is not
        # used, also in eval and export. ``ready`` mirrors it as a Python bool, so the traced graph has no branch.
        self.register_buffer("fader_ready", torch.tensor(0.0))
        # the base's per-patch error on unmasked patches of normal training images: target_quantile and median
        self.register_buffer("error_high", torch.tensor(1.0))
        self.register_buffer("error_median", torch.tensor(0.0))
        self.ready = False
        self._register_load_state_dict_pre_hook(self._fill_old_keys)
        self.register_load_state_dict_post_hook(_sync_ready)
        self.blur: nn.Module = GaussianBlur2d(sigma=smoothing_sigma, channels=1) if smoothing_sigma > 0 \
            else nn.Identity()

    def _fill_old_keys(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Checkpoints written before the gated decoder existed: its weights are the base decoder's (what FADeR
        then decoded with) and the error statistics keep their defaults."""
        if self.gated_decoder is None:
            return
        for key in self.gated_decoder.state_dict():
            name = f"{prefix}gated_decoder.{key}"
            if name not in state_dict and f"{prefix}unet.{key}" in state_dict:
                state_dict[name] = state_dict[f"{prefix}unet.{key}"]
        for name in ("error_high", "error_median"):
            state_dict.setdefault(f"{prefix}{name}", getattr(self, name))

    # ------------------------------------------------------------------ mask and hint
    def patch_mask(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic mask ``[B, 1, gh, gw]`` (1 = excised) of ``images`` in [0, 1]."""
        saliency = to_grid(self.mask_source(images), self.grid)
        return topk_patch_mask(saliency, self.num_masked)

    def excise(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hinted images, patch mask)``: the mask's patches replaced by the hint."""
        with torch.no_grad():
            mask = self.patch_mask(images)
        pixel_mask = F.interpolate(mask, scale_factor=self.patch_size, mode="nearest")
        return hint_images(images, pixel_mask, self.hint, self.mosaic_size), mask

    # ------------------------------------------------------------------ FADeR
    def descriptors(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-patch descriptor ``[B, sum C, gh, gw]``: every encoder level resampled to the patch grid."""
        return torch.cat([to_grid(f, self.grid) for f in features], dim=1)

    def gate_logits(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """FADeR's gate logits ``[B, L, gh, gw]`` (one channel per skip level)."""
        if self.attenuator is None:
            raise RuntimeError("this model was built with attenuation=False (no FADeR module).")
        return self.attenuator(self.descriptors(features))

    @staticmethod
    def hold_excised(gates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Gates with the excised patches held at 1: the mosaic hint there is EAR's, not a leaked defect."""
        return gates * (1.0 - mask) + mask

    def level_gates(self, gates: torch.Tensor) -> list[torch.Tensor]:
        """Patch gates resampled bilinearly to each skip level's resolution (``[B, 1, H/s, W/s]`` per level), so a
        gate fades across patch borders instead of stepping at them."""
        out = []
        for level, stride in enumerate(self.skip_strides):
            size = (self.image_size // stride, self.image_size // stride)
            gate = gates[:, level:level + 1]
            out.append(F.interpolate(gate, size=size, mode="bilinear", align_corners=False))
        return out

    # ------------------------------------------------------------------ forward passes
    def reconstruct(self, images: torch.Tensor, attenuate: bool | None = None) -> FaderOutput:
        """Mask, hint and reconstruct. With the gates (``attenuate``, default :attr:`gates`), a FADeR module and
        the FADeR stage reached, the gated skips go through the fine-tuned decoder; otherwise the base decodes."""
        attenuate = self.gates if attenuate is None else attenuate
        hinted, mask = self.excise(images)
        features = self.unet.encode(hinted)
        if not (attenuate and self.attenuator is not None and self.ready):
            return FaderOutput(self.unet.decode(features), hinted, mask, None)
        gates = self.hold_excised(torch.sigmoid(self.gate_logits(features)), mask)
        reconstruction = self.unet.decode(features, self.level_gates(gates), self.gated_decoder)
        return FaderOutput(reconstruction, hinted, mask, gates)

    def raw_map(self, images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Unsmoothed per-pixel error ``[B, 1, H, W]``."""
        return error_map(images, reconstruction, self.anomaly_map_metric)

    def predict(self, images: torch.Tensor) -> InferenceBatch:
        """Anomaly map = smoothed reconstruction error; image score = its maximum."""
        out = self.reconstruct(images)
        anomaly_map = self.blur(self.raw_map(images, out.reconstruction))
        return InferenceBatch(pred_score=anomaly_map.amax(dim=(1, 2, 3)), anomaly_map=anomaly_map)

    def base_losses(self, images: torch.Tensor) -> FaderTrainOutput:
        """Stage 1 (EAR): reconstruct the clean image from the hinted one, skips ungated."""
        out = self.reconstruct(images, attenuate=False)
        loss = reconstruction_loss(images, out.reconstruction)
        zero = loss.new_zeros(())
        return FaderTrainOutput(loss, loss.detach(), zero, zero, zero)

    def patch_errors(self, images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Mean error per patch ``[B, 1, gh, gw]`` (unsmoothed map)."""
        return F.avg_pool2d(self.raw_map(images, reconstruction), self.patch_size)

    @torch.no_grad()
    def unmasked_base_errors(self, images: torch.Tensor) -> torch.Tensor:
        """The base's per-patch errors on the unmasked patches of (normal) ``images``, flat."""
        out = self.reconstruct(images, attenuate=False)
        errors = self.patch_errors(images, out.reconstruction)
        return errors[out.mask == 0]

    @torch.no_grad()
    def start_fader(self, normal_errors: torch.Tensor) -> None:
        """Begin the FADeR stage: store the statistics of ``normal_errors`` (:meth:`unmasked_base_errors` over the
        normal training images), copy the base decoder into :attr:`gated_decoder`, mark FADeR ready."""
        if self.attenuator is None or self.gated_decoder is None:
            raise RuntimeError("this model was built with attenuation=False (no FADeR module).")
        errors = normal_errors.detach().float().flatten().cpu()
        if errors.numel() == 0:
            raise ValueError("no base errors to take statistics from.")
        self.error_high.fill_(float(torch.quantile(errors, self.target_quantile)))
        self.error_median.fill_(float(errors.median()))
        self.gated_decoder.load_state_dict(self.unet.decoder().state_dict())
        self.fader_ready.fill_(1.0)
        self.ready = True

    def target_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)`` of :func:`attenuation_targets`: open up to the normal ``target_quantile``, shut from
        ``2 * quantile - median`` on."""
        spread = (self.error_high - self.error_median).clamp_min(1e-6)
        return self.error_high, self.error_high + spread

    def fader_losses(self, images: torch.Tensor, attenuation_weight: float = 1.0,
                     generator: torch.Generator | None = None) -> FaderTrainOutput:
        """Stage 2 (FADeR), after :meth:`start_fader`, with the base frozen:

        1. synthetic defects on a few patches (:func:`corrupt_patches`); the mask is taken from the corrupted image,
           so some defects are excised and others leak, as at test time;
        2. targets: the frozen base's error **against the clean image** per patch, scaled by the normal statistics
           (:func:`attenuation_targets`), so a defect the base copies through its skips asks for a shut gate;
        3. loss = reconstruction loss of the clean image through the gated skips and the fine-tuned decoder copy +
           ``attenuation_weight`` x BCE(gate logits, targets) on the unmasked patches only (excised patches hold
           their gate at 1 and have no target).
        """
        if self.attenuator is None or self.gated_decoder is None:
            raise RuntimeError("this model was built with attenuation=False (no FADeR module).")
        if not self.ready:
            raise RuntimeError("FADeR's stage has not started: call start_fader with the normal error statistics.")
        corrupted, _ = corrupt_patches(images, self.patch_size, self.corruption_rate, generator)
        with torch.no_grad():
            hinted, mask = self.excise(corrupted)
            features = self.unet.encode(hinted)
            base = self.unet.decode(features)
            low, high = self.target_bounds()
            targets = attenuation_targets(self.patch_errors(images, base), low, high)
        logits = self.gate_logits(features)
        gates = self.hold_excised(torch.sigmoid(logits), mask)
        reconstruction = self.unet.decode(features, self.level_gates(gates), self.gated_decoder)
        rec_loss = reconstruction_loss(images, reconstruction)
        visible = (1.0 - mask).expand_as(logits)
        bce = F.binary_cross_entropy_with_logits(logits, targets.expand_as(logits), weight=visible, reduction="sum")
        bce = bce / visible.sum().clamp_min(1.0)
        loss = rec_loss + attenuation_weight * bce
        open_gates = (torch.sigmoid(logits.detach()) * visible).sum() / visible.sum().clamp_min(1.0)
        target_mean = (targets * (1.0 - mask)).sum() / (1.0 - mask).sum().clamp_min(1.0)
        return FaderTrainOutput(loss, rec_loss.detach(), bce.detach(), open_gates, target_mean)

    def forward(self, images: torch.Tensor) -> InferenceBatch | FaderOutput:
        """Eval: ``InferenceBatch``; training: the :class:`FaderOutput` of the full (gated) pass."""
        if self.training:
            return self.reconstruct(images)
        return self.predict(images)

    def extra_repr(self) -> str:
        return (f"mask_source={self.mask_source_name!r}, backbone={self.backbone!r}, grid={self.grid}, "
                f"num_masked={self.num_masked}, hint={self.hint!r}, attenuation={self.attenuation}, "
                f"gates={self.gates}")


def _sync_ready(module: nn.Module, incompatible_keys: Any) -> None:
    """After loading a state dict: the Python flag follows the loaded ``fader_ready`` buffer."""
    del incompatible_keys
    module.ready = bool(module.fader_ready.item() > 0.5)


def describe(model: FaderModel) -> dict[str, Any]:
    """A short summary for logs: sizes of the trainable parts."""
    unet = sum(p.numel() for p in model.unet.parameters())
    mlp = sum(p.numel() for p in model.attenuator.parameters()) if model.attenuator is not None else 0
    decoder = sum(p.numel() for p in model.gated_decoder.parameters()) if model.gated_decoder is not None else 0
    return {"unet_parameters": unet, "fader_parameters": mlp, "gated_decoder_parameters": decoder,
            "grid": model.grid, "num_masked": model.num_masked}
