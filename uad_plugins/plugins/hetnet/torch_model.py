"""HetNet as a plain ``nn.Module``: two frozen teachers (CNN + ViT), local-global fusion, two students.

The paper (Yu et al., IROS 2025) published no code; every block below is our reading of its pipeline figure and
text, summarised in the plugin's README. No Lightning here (see :mod:`uad_plugins.plugins.hetnet.model`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn

from uad_plugins.components.backbones import (
    backbone_normalization,
    build_vit,
    create_feature_extractor,
    load_checked,
    load_weights_file,
    parse_pretrained,
)
from uad_plugins.components.scoring import GaussianBlur2d
from uad_plugins.errors import ConfigError, DataError, WeightsError
from uad_plugins.protocols import modality_of

__all__ = [
    "SCORE_STUDENTS",
    "VARIANTS",
    "GaussianBlur2d",
    "HetNetModel",
    "HetNetTrainOutput",
    "LocalFusion",
    "LocalGlobalFusion",
    "MultiScaleHybridFusion",
    "OneClassEmbedding",
    "StudentDecoder",
    "ViTTeacher",
    "cosine_distance",
]

logger = logging.getLogger(__name__)

#: which students make the anomaly map
SCORE_STUDENTS = ("both", "sr", "sd")
#: what the network is: the paper's two teachers, the CNN teacher alone, or RD4AD-style single-teacher distillation
VARIANTS = ("hetnet", "cnn_only", "rd4ad")


class HetNetTrainOutput(NamedTuple):
    """One training forward: total loss, the two distillation terms and the share of noised feature cells."""

    loss: torch.Tensor
    sr_loss: torch.Tensor
    sd_loss: torch.Tensor
    noise_fraction: torch.Tensor


def cosine_distance(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` over channels, per position: ``[B, 1, H, W]`` (the RD4AD anomaly measure)."""
    similarity = (F.normalize(teacher, dim=1, eps=1e-6) * F.normalize(student, dim=1, eps=1e-6)).sum(1, keepdim=True)
    return 1.0 - similarity


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """``Conv2d (no bias) - BatchNorm2d - ReLU`` with 'same' padding."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


# ---------------------------------------------------------------------------------------------- ViT teacher
class ViTTeacher(nn.Module):
    """A frozen timm Vision Transformer returning the patch tokens of some blocks as a map ``[B, sum D, h, w]``.

    The model is built for ``image_size`` (fixed position table: no runtime resampling, so it exports). Inputs come
    normalised for the CNN teacher; a fixed affine map converts them to the ViT's own normalisation.

    Args:
        backbone: timm ViT name (``vit_tiny_patch16_224``, ``vit_small_patch16_224``, ``deit_*``, ...).
        layers: block indices whose outputs are concatenated (0-based).
        image_size: square input side; a multiple of the patch size.
        pretrained: ``True`` (timm hub; a ``WeightsError`` when it cannot deliver), ``False`` (random, logged) or a
            local weights file of the same ViT (any input size: the position table is resampled on load).
        input_mean, input_std: the normalisation the inputs arrive with.
    """

    def __init__(self, backbone: str, layers: Sequence[int], image_size: int, pretrained: bool | str | os.PathLike[str],
                 input_mean: Sequence[float], input_std: Sequence[float]) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        def build(device: str, **kwargs: Any) -> nn.Module:
            return build_vit(backbone, owner="hetnet", role="ViT teacher", device=device, img_size=image_size,
                             **kwargs)

        probe = build("meta")  # cheap: the architecture without memory, to check the settings first
        if not isinstance(probe, VisionTransformer):
            raise ConfigError(f"hetnet: vit_backbone {backbone!r} is a {type(probe).__name__}, not a timm "
                              "VisionTransformer.", hint="Use vit_tiny_patch16_224, vit_small_patch16_224, "
                              "vit_base_patch16_224, deit_small_patch16_224, ...")
        patch = int(probe.patch_embed.patch_size[0])
        if image_size % patch:
            raise ConfigError(f"hetnet: image_size={image_size} is not a multiple of the ViT patch size {patch}.",
                              hint=f"Use a multiple of {patch} (e.g. 224 or 256).")
        depth = len(probe.blocks)
        layers = [int(i) for i in layers]
        if not layers or any(not 0 <= i < depth for i in layers) or len(set(layers)) != len(layers):
            raise ConfigError(f"hetnet: vit_layers={layers} must be distinct block indices in [0, {depth - 1}] of "
                              f"{backbone!r}.", hint=f"E.g. --model.vit_layers '[{depth // 2 - 1}, {depth - 1}]'.")
        model = build("cpu", depth=max(layers) + 1)  # blocks after the deepest used one are never built
        self.backbone = backbone
        self.layers = layers
        self.patch_size = patch
        self.embed_dim = int(model.embed_dim)
        self.channels = self.embed_dim * len(layers)
        self.grid = (image_size // patch, image_size // patch)
        model.prune_intermediate_layers(indices=layers, prune_norm=True, prune_head=True)  # no final norm, no head
        self._load_weights(model, pretrained)
        self.model = model
        self.model.requires_grad_(False)
        mean, std = backbone_normalization(backbone)
        scale = torch.tensor(input_std) / torch.tensor(std)
        shift = (torch.tensor(input_mean) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("scale", scale.view(1, 3, 1, 1).float(), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1).float(), persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> ViTTeacher:
        """Stay in eval mode whatever the parent asks (frozen teacher)."""
        return super().train(False)

    def _load_weights(self, model: nn.Module, pretrained: bool | str | os.PathLike[str]) -> None:
        pretrained = parse_pretrained(pretrained)
        if pretrained is False:
            logger.warning("hetnet: the ViT teacher '%s' is randomly initialised (vit_pretrained=False): its "
                           "'global' features are random projections, not ImageNet features.", self.backbone)
            return
        if pretrained is True:
            try:  # the core's offline-first path: timm hub, HF_HUB_OFFLINE honoured, WeightsError when it fails
                hub = create_feature_extractor(self.backbone, [f"blocks.{max(self.layers)}"], pretrained=True)
            except WeightsError as exc:
                raise WeightsError(
                    f"hetnet: no pretrained weights for the ViT teacher '{self.backbone}' could be had offline.",
                    hint="Pass a local weights file of this ViT (--model.vit_pretrained /path/to/vit.safetensors, "
                    "any input size), or use a random ViT teacher (--model.vit_pretrained false; see the plugin "
                    f"README for what that means). Cause: {str(exc).splitlines()[0]}") from exc
            state = {k.removeprefix("model."): v for k, v in hub.model.state_dict().items()}
            self._load_state(model, state, "the timm hub")
            return
        if not isinstance(pretrained, str | os.PathLike):
            raise ConfigError(f"hetnet: vit_pretrained must be true, false or a path, got {pretrained!r}.")
        path = Path(pretrained).expanduser()
        state = load_weights_file(path)
        if state and all(k.startswith("model.") for k in state):  # saved from a timm feature wrapper
            state = {k.removeprefix("model."): v for k, v in state.items()}
        self._load_state(model, state, f"file {str(path)!r}")
        logger.info("hetnet: ViT teacher '%s' loaded weights from %s.", self.backbone, path)

    def _load_state(self, model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Load ``state`` (position table resampled to this size by timm's filter); every key must fit."""
        from timm.models.vision_transformer import checkpoint_filter_fn

        try:
            state = checkpoint_filter_fn(dict(state), model)
        except Exception as exc:  # timm's filter raises on foreign layouts
            raise WeightsError(f"hetnet: weights from {source} are not a '{self.backbone}' state dict "
                               f"({type(exc).__name__}: {exc}).") from exc
        load_checked(model, state, what=f"hetnet: weights from {source} do not fit the ViT teacher '{self.backbone}'",
                     label="ViT", hint=f"Give a weights file of timm's '{self.backbone}', or set "
                     "--model.vit_backbone to the ViT the file was made for.")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch-token maps of the chosen blocks, concatenated: ``[B, len(layers) * D, h, w]``."""
        x = images * self.scale + self.shift
        maps = self.model.forward_intermediates(x, indices=self.layers, intermediates_only=True, output_fmt="NCHW")
        return torch.cat(list(maps), dim=1)


# ---------------------------------------------------------------------------------------------- fusion
class LocalGlobalFusion(nn.Module):
    """ALGF, our reading: size-adjusted local (CNN) + global (ViT) features + their attention-weighted hybrid.

    The CNN levels are average-pooled to the fusion grid (the deepest level's) and concatenated, the ViT map is
    bilinearly resized to it; a ``1x1 conv - BN - ReLU`` brings each to ``dim`` channels ("size adjust"). The
    cross-structure attention works on the pooled vectors (as drawn in the paper): a shared bottleneck MLP on
    ``[GAP(local), GAP(global)]`` gives two channel logits, softmax over the two structures gives per-channel
    weights, and the hybrid is ``w_l * local + w_g * global``. Output: ``local + global + hybrid``.
    """

    def __init__(self, local_channels: int, global_channels: int, dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.local_proj = conv_bn_relu(local_channels, dim, kernel=1)
        self.global_proj = conv_bn_relu(global_channels, dim, kernel=1)
        hidden = max(dim // reduction, 8)
        self.squeeze = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True))
        self.gate_local = nn.Linear(hidden, dim)
        self.gate_global = nn.Linear(hidden, dim)

    def forward(self, local_levels: Sequence[torch.Tensor], global_map: torch.Tensor) -> torch.Tensor:
        """Fused map ``[B, dim, h, w]`` on the grid of the last (deepest) local level."""
        grid = (int(local_levels[-1].shape[-2]), int(local_levels[-1].shape[-1]))
        pooled = [f if tuple(f.shape[-2:]) == grid else F.adaptive_avg_pool2d(f, grid) for f in local_levels]
        local = self.local_proj(torch.cat(pooled, dim=1))
        if tuple(global_map.shape[-2:]) != grid:
            global_map = F.interpolate(global_map, size=grid, mode="bilinear", align_corners=False)
        glob = self.global_proj(global_map)
        context = self.squeeze(torch.cat([local.mean(dim=(2, 3)), glob.mean(dim=(2, 3))], dim=1))
        weights = torch.softmax(torch.stack([self.gate_local(context), self.gate_global(context)]), dim=0)
        hybrid = weights[0][..., None, None] * local + weights[1][..., None, None] * glob
        return local + glob + hybrid


class LocalFusion(nn.Module):
    """The CNN levels alone, fused as ALGF fuses them (no global branch, no cross-structure attention).

    The levels are average-pooled to the deepest level's grid, concatenated and brought to ``dim`` channels by a
    ``1x1 conv - BN - ReLU``: ALGF's "size adjust" of the local features. Used by ``variant=cnn_only`` (then MHF
    follows) and ``variant=rd4ad`` (RD4AD's multi-scale feature fusion, our reading, straight into the one-class
    embedding). Called as ``fusion(levels, None)`` so the variants share one forward.
    """

    def __init__(self, local_channels: int, dim: int) -> None:
        super().__init__()
        self.local_proj = conv_bn_relu(local_channels, dim, kernel=1)

    def forward(self, local_levels: Sequence[torch.Tensor], global_map: torch.Tensor | None = None) -> torch.Tensor:
        """Fused map ``[B, dim, h, w]`` on the grid of the last (deepest) local level; ``global_map`` is ignored."""
        del global_map
        grid = (int(local_levels[-1].shape[-2]), int(local_levels[-1].shape[-1]))
        pooled = [f if tuple(f.shape[-2:]) == grid else F.adaptive_avg_pool2d(f, grid) for f in local_levels]
        return self.local_proj(torch.cat(pooled, dim=1))


class MultiScaleHybridFusion(nn.Module):
    """MHF: identity, one ``3x3`` conv and two ``3x3`` convs in parallel, concatenated (``3 * dim`` channels)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.one = conv_bn_relu(dim, dim)
        self.two = nn.Sequential(conv_bn_relu(dim, dim), conv_bn_relu(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3 * dim, h, w]``."""
        return torch.cat([x, self.one(x), self.two(x)], dim=1)


class OneClassEmbedding(nn.Module):
    """OCE (RD4AD-style bottleneck, our reading): a stride-2 residual block to a compact embedding."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, dim, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim))
        self.skip = nn.Sequential(nn.Conv2d(in_channels, dim, 1, stride=2, bias=False), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim, ceil(h / 2), ceil(w / 2)]``."""
        return F.relu(self.body(x) + self.skip(x))


class StudentDecoder(nn.Module):
    """A reverse-distillation student: from the embedding back up to every teacher level, deepest first.

    Stage ``i`` resizes to teacher level ``i``'s grid (bilinear), applies two ``3x3 conv - BN - ReLU`` of width
    ``max(C_i, 64)`` and predicts the level with a linear ``1x1`` conv (teacher features can be negative).
    """

    def __init__(self, in_channels: int, level_channels: Sequence[int], min_width: int = 64) -> None:
        super().__init__()
        widths = [max(int(c), min_width) for c in level_channels]
        blocks, heads = [], []
        previous = in_channels
        for width, channels in zip(reversed(widths), reversed(list(level_channels)), strict=True):
            blocks.append(nn.Sequential(conv_bn_relu(previous, width), conv_bn_relu(width, width)))
            heads.append(nn.Conv2d(width, int(channels), 1))
            previous = width
        self.blocks = nn.ModuleList(blocks)  # deepest level first
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Predicted teacher levels, shallow to deep (the order of ``sizes``)."""
        outputs: list[torch.Tensor] = []
        for block, head, size in zip(self.blocks, self.heads, reversed(list(sizes)), strict=True):
            x = block(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
            outputs.append(head(x))
        return outputs[::-1]


# ---------------------------------------------------------------------------------------------- the network
class HetNetModel(nn.Module):
    """HetNet (Yu et al., IROS 2025), our reconstruction of it.

    Frozen CNN teacher (multi-level local features) and frozen ViT teacher (global features) see the same image.
    ALGF fuses them, MHF widens the fused map to three receptive fields, and two students decode it back to every
    CNN level: Student-SR from the clean features (distilled from the CNN teacher), Student-SD from features whose
    CNN levels had random boxes replaced by local multivariate Gaussian noise (distilled from Student-SR's clean
    output). Each student has its own one-class embedding (OCE).

    ``variant`` gives the ablation rows that say what the offline HetNet is (the ViT teacher is random offline):

    * ``hetnet``: the above.
    * ``cnn_only``: no ViT teacher at all; the CNN levels are fused as ALGF fuses them without its global branch
      (:class:`LocalFusion`), then MHF, OCE and the two students as above (the paper's "CNN teacher only" row).
    * ``rd4ad``: RD4AD-style single-teacher reverse distillation with the same CNN teacher: :class:`LocalFusion` to
      ``3 * fusion_dim`` channels (no MHF), one OCE, one student distilled from the CNN teacher. With noise
      (``denoise_weight > 0``) the same student also decodes the noised levels back to the clean teacher.

    ``denoise_weight == 0`` turns the noise off in every variant: no noise is fitted or sampled, only the clean
    path is trained (score with ``score_students=sr`` then: Student-SD stays untrained).

    Args:
        variant: ``hetnet``, ``cnn_only`` or ``rd4ad`` (see above); the ViT settings are unused without ``hetnet``.
        backbone: timm CNN teacher; layers: its levels, shallow to deep (strides must not decrease).
        pretrained: CNN teacher weights, ``True``/``False``/a local file (see ``components.backbones``).
        vit_backbone: timm ViT teacher; vit_layers: its blocks whose tokens are used.
        vit_pretrained: ViT teacher weights, ``True``/``False``/a local file.
        image_size: square input side (the ViT is built for it; a multiple of its patch size).
        fusion_dim: channels of the fused map (MHF makes ``3 * fusion_dim``).
        embed_dim: channels of each student's one-class embedding.
        denoise_weight: weight of the Student-SD term in the loss.
        noise_synthesizer, noise_args: the feature-noise synthesizer (a ``modality == "feature"`` plugin with
            ``partial_fit``), one instance per CNN level.
        score_students: which students make the map: ``both`` (mean), ``sr`` or ``sd``.
        smoothing_sigma: Gaussian sigma (pixels) of the map smoothing.

    Eval: ``forward(images) -> InferenceBatch(pred_score [B], anomaly_map [B, 1, H, W])``; training:
    :class:`HetNetTrainOutput` (after :meth:`fit_noise`, unless the noise needs no fit).
    """

    def __init__(
        self,
        variant: str = "hetnet",
        backbone: str = "tf_efficientnet_lite0",
        layers: Sequence[str] = ("blocks.1", "blocks.2", "blocks.4"),
        pretrained: bool | str = True,
        vit_backbone: str = "vit_tiny_patch16_224",
        vit_layers: Sequence[int] = (5, 11),
        vit_pretrained: bool | str = False,
        image_size: int = 224,
        fusion_dim: int = 128,
        embed_dim: int = 256,
        denoise_weight: float = 1.0,
        noise_synthesizer: str = "plugin:gaussian_feature_noise",
        noise_args: Mapping[str, Any] | None = None,
        score_students: str = "both",
        smoothing_sigma: float = 4.0,
    ) -> None:
        super().__init__()
        if score_students not in SCORE_STUDENTS:
            raise ConfigError(f"hetnet: score_students={score_students!r} is not usable; it must be one of "
                              f"{', '.join(SCORE_STUDENTS)}.", hint="Fix --model.score_students.")
        if variant not in VARIANTS:
            raise ConfigError(f"hetnet: variant={variant!r} is not usable; it must be one of {', '.join(VARIANTS)}.",
                              hint="Fix --model.variant.")
        if variant == "rd4ad" and score_students == "sd":
            raise ConfigError("hetnet: variant=rd4ad has one student; score_students=sd does not exist there.",
                              hint="Use --model.score_students both (or sr): the one student makes the map.")
        self.variant = variant
        self.layers = list(layers)
        self.image_size = int(image_size)
        self.denoise_weight = float(denoise_weight)
        self.score_students = score_students
        self.noise_synthesizer = noise_synthesizer
        self.noise = [self._make_noise(noise_synthesizer, noise_args) for _ in self.layers]  # one per CNN level
        mean, std = backbone_normalization(backbone)  # the ViT is built first: its settings fail fast
        self.vit: ViTTeacher | None = None
        if variant == "hetnet":
            self.vit = ViTTeacher(vit_backbone, vit_layers, self.image_size, vit_pretrained, mean, std)
        self.cnn = create_feature_extractor(backbone, self.layers, pretrained)
        if any(b < a for a, b in zip(self.cnn.reductions, self.cnn.reductions[1:], strict=False)):
            raise ConfigError(f"hetnet: layers {self.layers} have strides {self.cnn.reductions}; they must be "
                              "given shallow to deep (strides never decreasing).",
                              hint="Order --model.layers from the shallowest to the deepest level.")
        maps = self.cnn.probe(self.image_size, owner="hetnet", hint="Use a larger --model.image_size (224 or 256).")
        self.level_sizes: list[tuple[int, int]] = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        channels = list(self.cnn.channels)
        self.fusion: nn.Module
        self.hybrid: nn.Module
        if self.vit is not None:
            self.fusion = LocalGlobalFusion(sum(channels), self.vit.channels, fusion_dim)
            self.hybrid = MultiScaleHybridFusion(fusion_dim)
        elif variant == "cnn_only":
            self.fusion = LocalFusion(sum(channels), fusion_dim)
            self.hybrid = MultiScaleHybridFusion(fusion_dim)
        else:  # rd4ad: the fused local map goes straight to the one-class embedding
            self.fusion = LocalFusion(sum(channels), 3 * fusion_dim)
            self.hybrid = nn.Identity()
        self.sr_embedding = OneClassEmbedding(3 * fusion_dim, embed_dim)
        self.sr = StudentDecoder(embed_dim, channels)
        self.sd_embedding: OneClassEmbedding | None = None
        self.sd: StudentDecoder | None = None
        if variant != "rd4ad":
            self.sd_embedding = OneClassEmbedding(3 * fusion_dim, embed_dim)
            self.sd = StudentDecoder(embed_dim, channels)
        self.blur = GaussianBlur2d(smoothing_sigma)

    @staticmethod
    def _make_noise(reference: str, args: Mapping[str, Any] | None) -> Any:
        from uad_plugins.factory import create_synthesizer

        if args is not None and not isinstance(args, Mapping):
            raise ConfigError(f"hetnet: noise_args={args!r} is not usable; it must be a mapping of the noise "
                              "synthesizer's options.", hint="E.g. --model.noise_args '{covariance: diagonal}'.")
        synth = create_synthesizer(reference, **dict(args or {}))
        if modality_of(synth) != "feature" or not callable(getattr(synth, "partial_fit", None)):
            raise ConfigError(f"hetnet: noise_synthesizer {reference!r} works on {modality_of(synth)} data; HetNet "
                              "needs a feature-map synthesizer (modality 'feature') with partial_fit().",
                              hint="Use plugin:gaussian_feature_noise (the paper's LMGN).")
        return synth

    # ------------------------------------------------------------------ noise statistics
    @property
    def uses_noise(self) -> bool:
        """Whether training samples feature noise (``denoise_weight > 0``)."""
        return self.denoise_weight > 0

    @property
    def noise_fitted(self) -> bool:
        """Whether every level's noise synthesizer can sample."""
        return all(bool(s.fitted) for s in self.noise)

    @torch.no_grad()
    def fit_noise(self, batches: Iterable[torch.Tensor]) -> None:
        """One pass over normal (pre-processed) images: per-position Gaussian statistics of every CNN level.

        Raises:
            DataError: no batch.
        """
        for synth in self.noise:
            synth.reset()
        seen = 0
        for images in batches:
            for synth, level in zip(self.noise, self.cnn(images), strict=True):
                synth.partial_fit(level)
            seen += int(images.shape[0])
        if not seen:
            raise DataError("hetnet: the training data gave no batch, so the noise statistics cannot be fitted.",
                            hint="Check that the training split holds normal images.")
        if not self.noise_fitted:
            raise DataError("hetnet: the noise synthesizer is still not fitted after a pass over the data.")

    # ------------------------------------------------------------------ forward
    def teachers(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Frozen teacher features: the CNN levels and the ViT map (``None`` without a ViT teacher)."""
        with torch.no_grad():
            return list(self.cnn(images)), (self.vit(images) if self.vit is not None else None)

    def fuse(self, local_levels: Sequence[torch.Tensor], global_map: torch.Tensor | None) -> torch.Tensor:
        """ALGF (or the local fusion) then MHF (none for ``rd4ad``): ``[B, 3 * fusion_dim, h, w]``."""
        return self.hybrid(self.fusion(local_levels, global_map))

    def add_noise(self, levels: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """LMGN on every CNN level with one seed (the same boxes in image coordinates); ``(noisy, noised share)``."""
        seed = int(torch.randint(0, 2**31 - 1, ()))
        noisy, masks = [], []
        for synth, level in zip(self.noise, levels, strict=True):
            out, mask = synth(level, seed=seed)
            noisy.append(out)
            masks.append(mask.float().mean())
        return noisy, torch.stack(masks).mean()

    def training_losses(self, images: torch.Tensor,
                        teachers: tuple[list[torch.Tensor], torch.Tensor | None] | None = None) -> HetNetTrainOutput:
        """SR: ``1 - cos`` to the CNN teacher per level; SD (noisy input): ``1 - cos`` to SR's clean output
        (``rd4ad``: the one student on the noisy input, ``1 - cos`` to the CNN teacher). Without noise
        (``denoise_weight == 0``) only the clean term is computed. ``teachers`` is :meth:`teachers` of ``images``
        when already at hand (a feature cache)."""
        if self.uses_noise and not self.noise_fitted:
            raise RuntimeError("HetNetModel.fit_noise() must run before training.")
        local, glob = self.teachers(images) if teachers is None else teachers
        sizes = self.level_sizes_of(local)
        batch = images.shape[0]
        if not self.uses_noise:
            sr = self.sr(self.sr_embedding(self.fuse(local, glob)), sizes)
            sr_loss = _distillation_loss(local, sr)
            zero = sr_loss.new_zeros(())
            return HetNetTrainOutput(sr_loss, sr_loss.detach(), zero, zero)
        noisy, fraction = self.add_noise(local)
        both_glob = torch.cat([glob, glob]) if glob is not None else None
        fused = self.fuse([torch.cat([c, n]) for c, n in zip(local, noisy, strict=True)], both_glob)
        if self.sd is None or self.sd_embedding is None:  # rd4ad: one student, both inputs back to the teacher
            predicted = self.sr(self.sr_embedding(fused), sizes)
            sr_loss = _distillation_loss(local, [p[:batch] for p in predicted])
            sd_loss = _distillation_loss(local, [p[batch:] for p in predicted])
        else:
            sr = self.sr(self.sr_embedding(fused[:batch]), sizes)
            sd = self.sd(self.sd_embedding(fused[batch:]), sizes)
            sr_loss = _distillation_loss(local, sr)
            sd_loss = _distillation_loss([r.detach() for r in sr], sd)
        loss = sr_loss + self.denoise_weight * sd_loss
        return HetNetTrainOutput(loss, sr_loss.detach(), sd_loss.detach(), fraction.detach())

    @staticmethod
    def level_sizes_of(levels: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
        """``(h, w)`` of every level."""
        return [(int(f.shape[-2]), int(f.shape[-1])) for f in levels]

    def student_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-student multi-scale maps ``[B, 1, H, W]`` (sum over levels of upsampled ``1 - cos``), unsmoothed."""
        local, glob = self.teachers(images)
        fused = self.fuse(local, glob)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        sizes = self.level_sizes_of(local)
        students = {"sr": (self.sr_embedding, self.sr), "sd": (self.sd_embedding, self.sd)}
        if self.sd is None:  # rd4ad: one student
            wanted: tuple[str, ...] = ("sr",)
        else:
            wanted = ("sr", "sd") if self.score_students == "both" else (self.score_students,)
        maps = {}
        for name in wanted:
            embedding, decoder = students[name]
            assert embedding is not None and decoder is not None
            predicted = decoder(embedding(fused), sizes)
            levels = [F.interpolate(cosine_distance(teacher, student), size=size, mode="bilinear",
                                    align_corners=False) for teacher, student in zip(local, predicted, strict=True)]
            maps[name] = torch.stack(levels).sum(dim=0)
        return maps

    def predict(self, images: torch.Tensor) -> InferenceBatch:
        """Multi-scale map (students averaged), Gaussian-smoothed; image score = its maximum."""
        maps = list(self.student_maps(images).values())
        anomaly_map = self.blur(torch.stack(maps).mean(dim=0))
        return InferenceBatch(pred_score=anomaly_map.amax(dim=(1, 2, 3)), anomaly_map=anomaly_map)

    def forward(self, images: torch.Tensor) -> InferenceBatch | HetNetTrainOutput:
        """Eval: ``InferenceBatch``; training: :class:`HetNetTrainOutput`."""
        if self.training:
            return self.training_losses(images)
        return self.predict(images)


def _distillation_loss(targets: Sequence[torch.Tensor], predictions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over levels of the mean ``1 - cos`` between target and predicted features."""
    return torch.stack([cosine_distance(t, p).mean() for t, p in zip(targets, predictions, strict=True)]).sum()
