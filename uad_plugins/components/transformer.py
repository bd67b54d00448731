"""Transformer pieces shared by UniAD-family models: neighbour mask, feature jitter, learned position embedding,
post-LayerNorm encoder layer, UniAD's layer-wise-query decoder layer and the feature encoder they all start with.

All modules take batch-first token tensors ``[B, N, D]`` with ``N = h * w`` tokens in row-major order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from uad_plugins.components.multiscale import MultiScaleFeatures
from uad_plugins.errors import ConfigError

__all__ = [
    "FeatureJitter",
    "FeatureTokenEncoder",
    "FeedForward",
    "LearnedPositionEmbedding",
    "MaskedEncoderLayer",
    "QueryDecoderLayer",
    "neighbour_mask",
    "xavier_init_linears",
]


def neighbour_mask(grid: tuple[int, int], window: tuple[int, int]) -> torch.Tensor:
    """Additive attention mask ``[N, N]``: ``-inf`` where the key lies in the query's ``window`` (itself included).

    Query ``(i, j)`` may not attend to keys ``(a, b)`` with ``|a - i| <= kh // 2`` and ``|b - j| <= kw // 2``.

    Raises:
        ConfigError: a window that is even, not positive, or not smaller than the grid in both dimensions
            (a window covering the map masks every key of a query, and softmax gives NaN).
    """
    (height, width), (kh, kw) = (int(grid[0]), int(grid[1])), (int(window[0]), int(window[1]))
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ConfigError(f"neighbour window {kh}x{kw} must be odd and positive (7x7 in UniAD).",
                          hint="Use an odd --model.neighbor_size such as 3, 5 or 7.")
    if kh >= height or kw >= width:
        raise ConfigError(
            f"neighbour window {kh}x{kw} is not smaller than the {height}x{width} feature map: some queries "
            "would have every key masked (softmax over all -inf gives NaN).",
            hint="Use a smaller --model.neighbor_size (at most feature_size // 2 is safe), or a larger image_size.")
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    near = ((rows[:, None] - rows[None, :]).abs() <= kh // 2) & ((cols[:, None] - cols[None, :]).abs() <= kw // 2)
    return torch.zeros(height * width, height * width).masked_fill(near, float("-inf"))


class FeatureJitter(nn.Module):
    """UniAD feature jittering, training only: ``f + N(0, I) * scale * ||f||_2 / C`` with probability ``prob``.

    The coin is flipped once per batch (as in the official code). In eval mode this is the identity.
    """

    def __init__(self, scale: float = 20.0, prob: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)
        self.prob = float(prob)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Jittered tokens ``[..., C]`` (same shape)."""
        if not self.training or self.scale <= 0 or self.prob <= 0:
            return tokens
        if self.prob < 1 and float(torch.rand(())) >= self.prob:
            return tokens
        channels = tokens.shape[-1]
        norms = tokens.norm(dim=-1, keepdim=True)
        return tokens + torch.randn_like(tokens) * (self.scale * norms / channels)


class LearnedPositionEmbedding(nn.Module):
    """Separate learned row and column tables (``U(0, 1)`` init); the token at ``(i, j)`` gets ``[col_j, row_i]``."""

    def __init__(self, grid: tuple[int, int], dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ConfigError(f"hidden_dim {dim} must be even (learned row and column embeddings of dim / 2).")
        self.grid = (int(grid[0]), int(grid[1]))
        self.row = nn.Parameter(torch.rand(self.grid[0], dim // 2))
        self.col = nn.Parameter(torch.rand(self.grid[1], dim // 2))

    def forward(self) -> torch.Tensor:
        """Position embedding ``[1, h * w, dim]``."""
        height, width = self.grid
        col = self.col[None, :, :].expand(height, width, -1)
        row = self.row[:, None, :].expand(height, width, -1)
        return torch.cat([col, row], dim=-1).reshape(1, height * width, -1)


class FeedForward(nn.Module):
    """``Linear(D, F) - ReLU - Dropout - Linear(F, D)``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MaskedEncoderLayer(nn.Module):
    """Post-LN self-attention layer (neighbour mask, position on queries and keys) followed by an FFN."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(dim, ffn, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``[B, N, D]`` -> ``[B, N, D]``."""
        qk = x + pos
        x = self.norm1(x + self.drop1(self.attn(qk, qk, x, attn_mask=mask, need_weights=False)[0]))
        return self.norm2(x + self.drop2(self.ffn(x)))


class QueryDecoderLayer(nn.Module):
    """UniAD's layer-wise query decoder layer (post-LN).

    (i) its own learned query attends to the encoder output, (ii) the result attends to the previous decoder
    output, (iii) FFN; each followed by add & LayerNorm. Both attentions use the neighbour mask.
    """

    def __init__(self, num_tokens: int, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(num_tokens, dim))
        self.attn_memory = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.attn_previous = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(dim, ffn, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, memory: torch.Tensor, previous: torch.Tensor, pos: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """``memory`` (encoder output) and ``previous`` (last decoder output) ``[B, N, D]`` -> ``[B, N, D]``."""
        query = self.query[None].expand(memory.shape[0], -1, -1)
        attended = self.attn_memory(query + pos, memory + pos, memory, attn_mask=mask, need_weights=False)[0]
        t = self.norm1(query + self.drop1(attended))
        attended = self.attn_previous(t + pos, previous + pos, previous, attn_mask=mask, need_weights=False)[0]
        t = self.norm2(t + self.drop2(attended))
        return self.norm3(t + self.drop3(self.ffn(t)))


def xavier_init_linears(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every ``Linear``/``Conv2d`` inside ``module`` (UniAD's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class FeatureTokenEncoder(nn.Module):
    """The first half of UniAD-family models, as a base class: frozen multi-scale features on one token grid, and a
    neighbour-masked post-LN transformer encoder of their (jittered) tokens.

    A subclass adds its decoder and head, and initialises the linear layers (``xavier_init_linears``) after it has
    built them all, so the random draws follow the construction order. Attributes (their names are the state-dict
    keys): ``features``, ``grid``, ``mask`` (``None`` without a neighbour mask), ``jitter``, ``input_proj``, ``pos``,
    ``encoder``.

    Args:
        name: the model's name in error messages (``"uniad"``).
        backbone, layers, pretrained: the frozen multi-scale backbone.
        image_size: square input side; fixes the token grid.
        hidden_dim, num_heads, num_encoder_layers, dim_feedforward, dropout: encoder sizes.
        neighbor_size: odd side of the neighbour-mask window; 0 turns the mask off.
        jitter_scale, jitter_prob: feature jittering (training only).

    Raises:
        ConfigError: ``hidden_dim`` not divisible by ``num_heads``, or an image too small for the backbone.
    """

    def __init__(self, name: str, backbone: str, layers: Sequence[str], pretrained: bool | str | os.PathLike[str],
                 image_size: int, hidden_dim: int, num_heads: int, num_encoder_layers: int, dim_feedforward: int,
                 dropout: float, neighbor_size: int, jitter_scale: float, jitter_prob: float) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ConfigError(f"{name}: hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}.")
        self.features = MultiScaleFeatures(backbone, layers, pretrained)
        try:
            self.grid = self.features.grid_size((image_size, image_size))
        except RuntimeError as exc:
            raise ConfigError(f"{name}: image_size {image_size} is too small for '{backbone}': {exc}",
                              hint="Use a larger --model.image_size (224 in the paper).") from exc
        self.mask: torch.Tensor | None
        if neighbor_size:
            self.register_buffer("mask", neighbour_mask(self.grid, (neighbor_size, neighbor_size)), persistent=False)
        else:
            self.mask = None
        self.jitter = FeatureJitter(jitter_scale, jitter_prob)
        self.input_proj = nn.Linear(self.features.channels, hidden_dim)
        self.pos = LearnedPositionEmbedding(self.grid, hidden_dim)
        self.encoder = nn.ModuleList(MaskedEncoderLayer(hidden_dim, num_heads, dim_feedforward, dropout)
                                     for _ in range(num_encoder_layers))

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, D]`` of features ``[B, C, h, w]`` (jittered in training)."""
        x = self.input_proj(self.jitter(features.flatten(2).transpose(1, 2)))
        pos = self.pos()
        for layer in self.encoder:
            x = layer(x, pos, self.mask)
        return x
