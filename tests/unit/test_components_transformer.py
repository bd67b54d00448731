"""Shared UniAD-family components: neighbour mask, jitter, position embedding, layers, multi-scale features."""

from __future__ import annotations

import pytest
import torch

from uad_plugins.components.multiscale import MultiScaleFeatures
from uad_plugins.components.transformer import (
    FeatureJitter,
    LearnedPositionEmbedding,
    MaskedEncoderLayer,
    QueryDecoderLayer,
    neighbour_mask,
)
from uad_plugins.errors import ConfigError


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def test_neighbour_mask_blocks_the_window_only() -> None:
    mask = neighbour_mask((5, 6), (3, 3))
    assert mask.shape == (30, 30)
    blocked = torch.isinf(mask)
    centre = 2 * 6 + 3  # token (2, 3)
    index = torch.nonzero(blocked[centre]).squeeze(1)
    rows, cols = index // 6, index % 6
    assert blocked[centre].sum() == 9 and rows.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert set(cols.tolist()) == {2, 3, 4}
    assert blocked[0].sum() == 4  # corner: clipped window
    assert blocked.diagonal().all() and (~blocked).any(dim=1).all()  # every query keeps some key
    assert mask[~blocked].eq(0).all()


@pytest.mark.parametrize(("grid", "window"), [((4, 4), (7, 7)), ((7, 7), (7, 7)), ((8, 3), (3, 3)), ((8, 8), (4, 4))])
def test_neighbour_mask_guard(grid: tuple[int, int], window: tuple[int, int]) -> None:
    with pytest.raises(ConfigError):
        neighbour_mask(grid, window)


def test_masked_attention_is_finite_at_the_largest_allowed_window() -> None:
    torch.manual_seed(0)
    layer = MaskedEncoderLayer(16, 2, 32, 0.0).eval()
    mask = neighbour_mask((4, 4), (3, 3))
    out = layer(torch.randn(2, 16, 16), torch.zeros(1, 16, 16), mask)
    assert torch.isfinite(out).all()


def test_jitter_only_in_training() -> None:
    jitter = FeatureJitter(scale=20.0, prob=1.0)
    tokens = torch.randn(2, 10, 8)
    assert torch.equal(jitter.eval()(tokens), tokens)
    torch.manual_seed(0)
    noisy = jitter.train()(tokens)
    assert noisy.shape == tokens.shape and not torch.allclose(noisy, tokens)
    # noise std per token is scale * ||f|| / C
    big = torch.ones(1, 20000, 4)
    spread = (jitter(big) - big).std()
    assert spread == pytest.approx(20.0 * 2.0 / 4, rel=0.05)
    assert torch.equal(FeatureJitter(20.0, 0.0).train()(tokens), tokens)


def test_position_embedding_layout() -> None:
    pos = LearnedPositionEmbedding((3, 4), 8)
    table = pos()
    assert table.shape == (1, 12, 8)
    token = table[0, 1 * 4 + 2]  # (row 1, col 2)
    assert torch.equal(token[:4], pos.col[2]) and torch.equal(token[4:], pos.row[1])
    with pytest.raises(ConfigError):
        LearnedPositionEmbedding((3, 4), 7)


def test_query_decoder_layer_shapes_and_own_query() -> None:
    torch.manual_seed(0)
    layer = QueryDecoderLayer(16, 8, 2, 16, 0.0).eval()
    memory, previous = torch.randn(3, 16, 8), torch.randn(3, 16, 8)
    out = layer(memory, previous, torch.zeros(1, 16, 8), neighbour_mask((4, 4), (3, 3)))
    assert out.shape == (3, 16, 8) and torch.isfinite(out).all()
    assert layer.query.shape == (16, 8) and layer.query.requires_grad


def test_multiscale_features_concat_on_stride16_grid() -> None:
    feats = MultiScaleFeatures("tf_efficientnet_lite0", ["blocks.0", "blocks.1", "blocks.2", "blocks.4"], False)
    assert feats.channels == 16 + 24 + 40 + 112 and feats.stride == 16
    assert feats.grid_size((128, 128)) == (8, 8)
    out = feats(torch.rand(2, 3, 128, 128))
    assert out.shape == (2, 192, 8, 8)
    assert not any(p.requires_grad for p in feats.parameters())
    with pytest.raises(ConfigError):
        MultiScaleFeatures("tf_efficientnet_lite0", ["blocks.0", "blocks.1"], False, stride=16)
