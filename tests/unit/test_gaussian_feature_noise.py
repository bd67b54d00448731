"""plugin:gaussian_feature_noise (HetNet's LMGN): exact per-position statistics, samples that follow them, masks that
mark exactly the replaced cells, seeds that reproduce (and give the same boxes at every map size), files, settings,
and how the core treats a feature-map synthesizer.

The core's ``run_synthesizer_contract`` checks image synthesizers only (it returns early for other modalities), so
the feature-map contract is checked here: shape and dtype kept, binary mask ``[1, H, W]``, reproducible per seed
with a fresh instance, nothing changed outside the mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uad_plugins.errors import ConfigError, DataError
from uad_plugins.plugins.gaussian_feature_noise.synthesizer import GaussianFeatureNoise


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def correlated(n: int, channels: int = 6, size: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` feature maps whose channels are correlated through a fixed mixing matrix, plus a position offset."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(channels, channels, generator=gen)
    z = torch.randn(n, size, size, channels, generator=gen)
    offset = torch.arange(size * size, dtype=torch.float32).reshape(1, size, size, 1) / 10
    return ((z @ mix.T) + offset).permute(0, 3, 1, 2).contiguous(), mix


def changed_cells(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (out - ref).abs().amax(dim=-3) > 0


# ---------------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_statistics_are_exact_and_independent_of_batching(covariance: str) -> None:
    x, _ = correlated(40)
    whole = GaussianFeatureNoise(covariance=covariance).fit(x)
    split = GaussianFeatureNoise(covariance=covariance).fit(x.split([1, 7, 13, 19]))
    assert whole.count == split.count == 40 and whole.shape == (6, 5, 5)
    torch.testing.assert_close(whole.mean, x.mean(0))
    torch.testing.assert_close(split.covariance_matrix, whole.covariance_matrix, rtol=1e-5, atol=1e-5)
    for i, j in [(0, 0), (2, 3), (4, 4)]:
        ref = torch.cov(x[:, :, i, j].T.double()).float()
        got = whole.covariance_matrix[i * 5 + j]
        torch.testing.assert_close(got, ref if covariance == "full" else ref.diagonal(), rtol=1e-5, atol=1e-5)


def test_samples_follow_the_fitted_gaussian() -> None:
    x, mix = correlated(400, channels=4, size=3)
    synth = GaussianFeatureNoise(num_boxes=1, box_size=1.0, epsilon=0.01).fit(x)
    canvas = torch.zeros(3000, 4, 3, 3)
    noisy, mask = synth(canvas, seed=0)
    assert bool(mask.all())  # a box of the whole map
    samples = noisy[:, :, 1, 2].double()
    target_mean = synth.mean[:, 1, 2].double()
    target_cov = synth.covariance_matrix[1 * 3 + 2].double() + 0.01 * torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(samples.mean(0), target_mean, atol=0.15, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), target_cov, atol=0.25 * float(target_cov.abs().max()), rtol=0)
    # the channels really are correlated (a diagonal model would not reproduce this)
    off_diag = target_cov - torch.diag(target_cov.diagonal())
    assert float(off_diag.abs().max()) > 0.5
    assert float((torch.cov(samples.T) - torch.diag(torch.cov(samples.T).diagonal())).abs().max()) > 0.5
    del mix


def test_diagonal_samples_have_no_correlation() -> None:
    x, _ = correlated(400, channels=4, size=2)
    synth = GaussianFeatureNoise(num_boxes=1, box_size=1.0, covariance="diagonal").fit(x)
    noisy, _ = synth(torch.zeros(3000, 4, 2, 2), seed=0)
    cov = torch.cov(noisy[:, :, 0, 0].T.double())
    target = synth.covariance_matrix[0].double() + 0.01
    torch.testing.assert_close(cov.diagonal(), target, rtol=0.15, atol=0.05)
    assert float((cov - torch.diag(cov.diagonal())).abs().max()) < 0.2 * float(target.max())


def test_degenerate_covariance_falls_back_to_eigenvalues() -> None:
    x, _ = correlated(30, channels=3, size=2)
    x[:, 1] = 2.0  # a constant channel: singular covariance, and epsilon 0 gives Cholesky nothing to hold on to
    synth = GaussianFeatureNoise(num_boxes=1, box_size=1.0, epsilon=0.0).fit(x)
    noisy, _ = synth(torch.zeros(50, 3, 2, 2), seed=1)
    assert torch.isfinite(noisy).all()
    torch.testing.assert_close(noisy[:, 1], torch.full((50, 2, 2), 2.0))  # zero variance: exactly the mean


# ---------------------------------------------------------------------------------------------- masks and boxes
@pytest.mark.parametrize("covariance", ["full", "diagonal", "identity"])
def test_mask_marks_exactly_the_replaced_cells(covariance: str) -> None:
    x, _ = correlated(20, size=8)
    synth = GaussianFeatureNoise(covariance=covariance).fit(x)
    for seed in range(6):
        noisy, mask = synth(x[seed], seed=seed)
        assert noisy.shape == x[seed].shape and noisy.dtype == x[seed].dtype
        assert mask.shape == (1, 8, 8) and set(mask.unique().tolist()) <= {0.0, 1.0}
        assert mask.sum() >= 1
        assert torch.equal(changed_cells(noisy, x[seed]), mask[0].bool())
    batch_noisy, batch_mask = synth(x[:4], seed=3)
    assert batch_noisy.shape == (4, 6, 8, 8) and batch_mask.shape == (4, 1, 8, 8)
    assert torch.equal(changed_cells(batch_noisy, x[:4]), batch_mask[:, 0].bool())


def test_box_count_and_size() -> None:
    synth = GaussianFeatureNoise(num_boxes=1, box_size=0.5, covariance="identity")
    for seed in range(10):
        _, mask = synth(torch.zeros(2, 8, 8), seed=seed)
        rows, cols = mask[0].nonzero(as_tuple=True)
        assert mask.sum() == 16 and rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3  # one 4x4 box
    tiny = GaussianFeatureNoise(num_boxes=1, box_size=0.01, covariance="identity")
    assert tiny(torch.zeros(2, 8, 8), seed=0)[1].sum() == 1  # smaller than a cell: the cell under its centre
    many = GaussianFeatureNoise(num_boxes=[3, 3], box_size=0.125, covariance="identity")
    areas = [float(many(torch.zeros(2, 32, 32), seed=s)[1].sum()) for s in range(10)]
    assert max(areas) == 48 and min(areas) >= 16  # three 4x4 boxes, overlapping at most fully


def test_probability() -> None:
    x, _ = correlated(10, size=6)
    never = GaussianFeatureNoise(probability=0.0).fit(x)
    noisy, mask = never(x, seed=0)
    assert torch.equal(noisy, x) and mask.sum() == 0
    half = GaussianFeatureNoise(probability=0.5, covariance="identity")
    _, masks = half(torch.zeros(400, 2, 6, 6), seed=0)
    share = float((masks.flatten(1).amax(1) > 0).float().mean())
    assert 0.4 < share < 0.6


def test_same_seed_gives_the_same_boxes_at_every_map_size() -> None:
    """The property HetNet relies on: one seed corrupts the same image region at every feature level."""
    synth = GaussianFeatureNoise(num_boxes=1, box_size=[0.2, 0.4], covariance="identity")
    for seed in range(12):
        fine = synth(torch.zeros(3, 64, 64), seed=seed)[1][0]
        coarse = synth(torch.zeros(50, 8, 8), seed=seed)[1][0]  # other size and channel count, same draws
        rows, cols = fine.nonzero(as_tuple=True)
        centre = ((rows.float().mean() + 0.5) / 64, (cols.float().mean() + 0.5) / 64)
        assert coarse[int(centre[0] * 8), int(centre[1] * 8)] == 1  # the box centre is noised at both sizes
        coarse_up = F.interpolate(coarse[None, None], size=(64, 64), mode="nearest")[0, 0]
        overlap = float((coarse_up * fine).sum() / fine.sum())
        assert overlap > 0.5


def test_reproducible_per_seed_on_fresh_instances_and_global_rng_untouched() -> None:
    x, _ = correlated(20, size=7)
    a = GaussianFeatureNoise().fit(x)
    b = GaussianFeatureNoise().fit(x.split(3))
    state = torch.random.get_rng_state()
    out_a, mask_a = a(x[:3], seed=5)
    torch.rand(11)
    out_b, mask_b = b(x[:3], seed=5)
    assert torch.equal(mask_a, mask_b)
    torch.testing.assert_close(out_a, out_b)
    assert not torch.equal(a(x[:3], seed=6)[1], mask_a)
    torch.random.set_rng_state(state)
    torch.rand(11)
    after = torch.random.get_rng_state()
    torch.random.set_rng_state(state)
    a(x[:3], seed=5)
    torch.rand(11)
    assert torch.equal(torch.random.get_rng_state(), after)  # a seeded call leaves the caller's RNG alone


def test_other_dtypes_keep_their_dtype() -> None:
    x, _ = correlated(10, size=4)
    synth = GaussianFeatureNoise().fit(x)
    noisy, mask = synth(x[0].double(), seed=0)
    assert noisy.dtype == torch.float64 and mask.dtype == torch.float64
    assert torch.equal(changed_cells(noisy, x[0].double()), mask[0].bool())


# ---------------------------------------------------------------------------------------------- errors and files
def test_unfitted_and_wrong_shapes_fail_clearly() -> None:
    synth = GaussianFeatureNoise()
    assert not synth.fitted
    with pytest.raises(ConfigError, match="not fitted") as info:
        synth(torch.rand(3, 32, 32), seed=0)  # an image: not what this synthesizer works on
    assert "feature" in str(info.value) and "plugin:perlin" in info.value.hint
    x, _ = correlated(5, size=4)
    synth.fit(x)
    with pytest.raises(ConfigError, match=r"\(6, 4, 4\)"):
        synth(torch.rand(6, 5, 5))
    with pytest.raises(ConfigError, match="feature maps"):
        synth(torch.rand(4, 4))
    with pytest.raises(ConfigError, match="same shape"):
        synth.partial_fit(torch.rand(2, 6, 5, 5))
    with pytest.raises(DataError):
        GaussianFeatureNoise().fit([])


def test_save_load_round_trip(tmp_path: Path) -> None:
    from uad_plugins import create_synthesizer

    x, _ = correlated(12, size=4)
    fitted = GaussianFeatureNoise().fit(x)
    path = fitted.save(tmp_path / "stats" / "level1.pt")
    loaded = create_synthesizer("plugin:gaussian_feature_noise", statistics=str(path))
    assert loaded.fitted and loaded.count == 12 and loaded.shape == (6, 4, 4)
    out_a, mask_a = fitted(x[:2], seed=4)
    out_b, mask_b = loaded(x[:2], seed=4)
    assert torch.equal(mask_a, mask_b)
    torch.testing.assert_close(out_a, out_b)
    loaded.partial_fit(x)  # loaded statistics can be extended
    assert loaded.count == 24
    with pytest.raises(ConfigError, match="covariance='full'"):
        GaussianFeatureNoise(covariance="diagonal", statistics=path)
    with pytest.raises(ConfigError, match="not found"):
        GaussianFeatureNoise(statistics=tmp_path / "missing.pt")
    torch.save({"mean": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="format"):
        GaussianFeatureNoise(statistics=tmp_path / "other.pt")


@pytest.mark.parametrize("kwargs", [
    {"num_boxes": [0, 2]}, {"num_boxes": [3, 1]}, {"num_boxes": [1.5, 2]}, {"box_size": [0.0, 0.2]},
    {"box_size": [0.5, 1.2]}, {"box_size": "big"}, {"probability": 1.5}, {"probability": True},
    {"covariance": "spherical"}, {"epsilon": -0.1},
])
def test_invalid_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        GaussianFeatureNoise(**kwargs)


# ---------------------------------------------------------------------------------------------- registration
def test_registered_as_a_feature_synthesizer_with_defaults() -> None:
    import inspect

    from uad_plugins import create_synthesizer, get_spec
    from uad_plugins.testing import run_synthesizer_contract

    spec = get_spec("synthesizer", "plugin:lmgn")
    assert spec is not None and spec.name == "gaussian_feature_noise" and "feature" in spec.tags
    assert spec.load() is GaussianFeatureNoise
    params = inspect.signature(GaussianFeatureNoise.__init__).parameters
    defaults = spec.default_init_args()
    assert set(defaults) == set(params) - {"self"}
    for key, value in defaults.items():
        default = params[key].default
        assert (list(default) if isinstance(default, tuple) else default) == value, key
    synth = create_synthesizer("plugin:gaussian_feature_noise")
    assert synth.modality == "feature" and not synth.fitted
    run_synthesizer_contract("plugin:gaussian_feature_noise")  # the image contract does not apply: it must not fail


def test_uad_synth_refuses_it_on_images(tmp_path: Path) -> None:
    from PIL import Image

    from uad_plugins.cli.main import main

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(src / "a.png")
    code = main(["synth", "--synthesizer", "plugin:gaussian_feature_noise", "--input", str(src), "--output",
                 str(tmp_path / "out")])
    assert code == 2
