"""plugin:pnas3d: Perlin field, region, normals, displacement along the normals, reproducibility, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from uad_plugins import create_synthesizer
from uad_plugins.data.pointcloud.geometry import estimate_normals, fit_plane, orient_normals
from uad_plugins.errors import ConfigError, DataError
from uad_plugins.plugins.pnas3d.noise import fbm_grid, perlin
from uad_plugins.plugins.pnas3d.synthesizer import Pnas3dSynthesizer

torch.set_num_threads(2)

#: the tiny configuration of the research note (papers-b.md section 2(h))
TINY = {"grid_res": 64, "noise_scale": 4.0, "octaves": 3, "persistence": 0.5, "lacunarity": 2.0, "threshold": 0.6,
        "strength": 0.02, "knn": 16}
SHARED_3D = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def height_field(n: int = 64, *, invalid: int = 5, dtype=np.float32) -> np.ndarray:
    """A 64 x 64 organised cloud 1 m from a sensor at the origin: a Gaussian bump, a few zeroed points."""
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1) - 0.5
    z = 1.0 - 0.05 * np.exp(-(xx**2 + yy**2) / 0.05)
    cloud = np.stack([0.2 * xx, 0.2 * yy, z], axis=-1).astype(dtype)
    cloud[:invalid, :invalid] = 0.0
    return cloud


def test_perlin_is_zero_on_the_lattice_and_fbm_is_normalised() -> None:
    rng = np.random.default_rng(0)
    lattice = perlin(np.arange(5.0), np.arange(4.0), rng)
    np.testing.assert_allclose(lattice, 0.0, atol=1e-12)
    a = fbm_grid(64, (1.0, 0.5), 4.0, 3, 0.5, 2.0, np.random.default_rng(1))
    b = fbm_grid(64, (1.0, 0.5), 4.0, 3, 0.5, 2.0, np.random.default_rng(1))
    c = fbm_grid(64, (1.0, 0.5), 4.0, 3, 0.5, 2.0, np.random.default_rng(2))
    assert a.shape == (64, 64) and a.min() == 0.0 and a.max() == 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_more_octaves_and_higher_scale_make_a_rougher_field() -> None:
    def roughness(**kw) -> float:
        args = {"res": 128, "extent": (1.0, 1.0), "scale": 2.0, "octaves": 1, "persistence": 0.5, "lacunarity": 2.0}
        args.update(kw)
        grids = [fbm_grid(rng=np.random.default_rng(s), **args) for s in range(4)]
        return float(np.mean([np.abs(np.diff(g, axis=1)).mean() for g in grids]))

    assert roughness(octaves=4) > 1.2 * roughness(octaves=1)
    assert roughness(scale=8.0) > 2.0 * roughness(scale=2.0)


def test_normals_on_a_plane_and_a_sphere() -> None:
    rng = np.random.default_rng(0)
    plane = np.c_[rng.uniform(-1, 1, (500, 2)), np.full(500, 0.3)]
    n = estimate_normals(plane, k=12)
    np.testing.assert_allclose(np.abs(n[:, 2]), 1.0, atol=1e-9)
    up = orient_normals(n, plane, direction=fit_plane(plane).normal)
    assert (up[:, 2] > 0).all() and fit_plane(plane).normal[2] > 0
    sphere = rng.normal(size=(2000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    normals = orient_normals(estimate_normals(sphere, k=16), sphere, toward=np.zeros(3))
    radial = np.einsum("ni,ni->n", normals, sphere)
    assert radial.max() < -0.97  # facing the centre (the "sensor"), i.e. against the radius


def test_spec_assertions_on_the_tiny_height_field() -> None:
    cloud = height_field()
    points, valid = cloud.reshape(-1, 3), (cloud.reshape(-1, 3) != 0).any(axis=1)
    synth = Pnas3dSynthesizer(**TINY, sign="bulge")
    result = synth.generate(points, None, np.random.default_rng(3), grid_shape=(64, 64))
    moved = result.points.astype(np.float64) - points
    # unmasked points and invalid points are unchanged, bit for bit
    assert np.array_equal(result.points[~result.mask], points[~result.mask])
    assert np.array_equal(result.points[~valid], points[~valid]) and not result.mask[~valid].any()
    # every masked point moved, along its normal, by the displacement
    assert (np.abs(moved[result.mask]).max(axis=1) > 0).all()
    along = np.einsum("ni,ni->n", moved[result.mask], result.normals[result.mask])
    np.testing.assert_allclose(along, result.displacement[result.mask], atol=1e-6)
    across = moved[result.mask] - along[:, None] * result.normals[result.mask]
    assert np.abs(across).max() < 1e-6  # float32 rounding only
    assert 0.0 < result.mask[valid].mean() < 1.0
    # the region is where the field exceeds the threshold
    assert (result.noise[result.mask] > 0.6).all() and not result.mask[valid & (result.noise <= 0.6)].any()
    # same seed, same output (also from a fresh instance); another seed, another output
    fresh = Pnas3dSynthesizer(**TINY, sign="bulge")
    again = fresh.generate(points, None, np.random.default_rng(3), grid_shape=(64, 64))
    assert np.array_equal(again.points, result.points) and np.array_equal(again.mask, result.mask)
    other = synth.generate(points, None, np.random.default_rng(4), grid_shape=(64, 64))
    assert not np.array_equal(other.mask, result.mask)


def test_bulge_and_dent_move_toward_and_away_from_the_sensor() -> None:
    cloud = height_field(invalid=0)
    for sign, direction in (("bulge", -1), ("dent", 1)):  # the sensor sits at the origin, the surface at z ~ 1
        out, mask = Pnas3dSynthesizer(**TINY, sign=sign)(cloud, seed=0)
        dz = (out[..., 2].astype(np.float64) - cloud[..., 2])[mask]
        assert mask.any() and (np.sign(dz[dz != 0]) == direction).all()
    flat = np.c_[np.random.default_rng(0).uniform(-1, 1, (3000, 2)), np.full(3000, 0.5)]
    out, mask = Pnas3dSynthesizer(**TINY, sign="bulge")(flat, seed=0)  # unorganised: along the plane normal (+z)
    assert mask.any() and (out[mask, 2] > 0.5).all() and np.array_equal(out[~mask], flat[~mask])


@pytest.mark.parametrize(("mode", "strength"), [("diag_frac", 0.03), ("abs", 0.004)])
def test_peak_displacement_is_the_strength(mode: str, strength: float) -> None:
    cloud = height_field(dtype=np.float64).reshape(-1, 3)
    synth = Pnas3dSynthesizer(**{**TINY, "strength": strength}, strength_mode=mode)
    result = synth.generate(cloud, None, np.random.default_rng(0))
    valid = (cloud != 0).any(axis=1)
    diag = np.linalg.norm(np.ptp(cloud[valid], axis=0))
    expected = strength * diag if mode == "diag_frac" else strength
    assert np.abs(result.displacement).max() == pytest.approx(expected, rel=1e-9)
    assert result.params["alpha"] == pytest.approx(expected, rel=1e-12)


def test_ranges_are_drawn_per_call_and_a_higher_threshold_gives_a_smaller_region() -> None:
    cloud = height_field().reshape(-1, 3)
    synth = Pnas3dSynthesizer(**{**TINY, "noise_scale": [2.0, 8.0], "strength": [0.01, 0.03]}, sign="random")
    params = [synth.generate(cloud, None, np.random.default_rng(s)).params for s in range(6)]
    assert len({p["noise_scale"] for p in params}) == 6 and {p["sign"] for p in params} == {"bulge", "dent"}
    assert all(2.0 <= p["noise_scale"] <= 8.0 and 0.01 <= p["strength"] <= 0.03 for p in params)
    fractions = [Pnas3dSynthesizer(**{**TINY, "threshold": t}).generate(cloud, None, np.random.default_rng(0))
                 .mask.mean() for t in (0.4, 0.6, 0.8)]
    assert fractions[0] > fractions[1] > fractions[2]


def test_tensor_and_numpy_interfaces() -> None:
    cloud = height_field()
    synth = Pnas3dSynthesizer(**TINY)
    out, mask = synth(torch.from_numpy(cloud), seed=5)
    assert out.dtype == torch.float32 and out.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}
    out_np, mask_np = synth(cloud.reshape(-1, 3).astype(np.float64), seed=5)
    assert out_np.dtype == np.float64 and mask_np.dtype == bool and mask_np.shape == (4096,)
    torch.manual_seed(0)
    first = synth(cloud)  # no seed: drawn from torch's global RNG
    torch.manual_seed(0)
    second = synth(cloud)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_points_marked_invalid_pass_through_even_when_not_finite() -> None:
    cloud = height_field(invalid=0).reshape(-1, 3).copy()
    cloud[:10] = np.nan
    valid = np.ones(len(cloud), dtype=bool)
    valid[:10] = False
    out, mask = Pnas3dSynthesizer(**TINY)(cloud, seed=0, valid=valid)
    assert np.isnan(out[:10]).all() and not mask[:10].any() and mask.any()


def test_given_normals_are_used() -> None:
    cloud = height_field(invalid=0).reshape(-1, 3).astype(np.float64)
    normals = np.tile([1.0, 0.0, 0.0], (len(cloud), 1))
    result = Pnas3dSynthesizer(**TINY, orient="plane").generate(cloud, None, np.random.default_rng(0),
                                                                 normals=normals)
    moved = result.points - cloud
    assert result.mask.any() and np.abs(moved[:, 1:]).max() == 0 and np.abs(moved[result.mask, 0]).min() > 0


def test_an_unreachable_threshold_leaves_the_cloud_unchanged() -> None:
    cloud = np.c_[np.random.default_rng(0).uniform(0, 1, (30, 2)), np.full(30, 1.0)]
    result = Pnas3dSynthesizer(**{**TINY, "threshold": 0.9999}, max_tries=2).generate(cloud, None,
                                                                                       np.random.default_rng(0))
    assert not result.mask.any() and np.array_equal(result.points, cloud) and result.params["tries"] == 2


def _collinear() -> np.ndarray:
    return np.c_[np.linspace(0, 1, 40), np.linspace(0, 2, 40), np.linspace(1, 3, 40)]


@pytest.mark.parametrize(("cloud", "message"), [
    (np.zeros((0, 3)), "empty"),
    (np.zeros((100, 3)), "no valid points"),
    (np.random.default_rng(0).random((10, 3)), "at least 16 are needed .the normals use knn"),
    (np.r_[np.random.default_rng(0).random((50, 3)), [[np.nan, 0, 1]]], "NaN or infinite"),
    (np.r_[np.random.default_rng(0).random((50, 3)), [[np.inf, 0, 1]]], "NaN or infinite"),
    (np.zeros((4, 4, 4, 3)), "expects a cloud"),
    (np.zeros((10, 2)), "expects a cloud"),
    (_collinear(), "do not span a surface"),
])
def test_bad_clouds_raise_data_errors(cloud: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        Pnas3dSynthesizer(**TINY)(cloud, seed=0)


@pytest.mark.parametrize(("options", "message"), [
    ({"grid_res": 1}, "grid_res"), ({"octaves": 0}, "octaves"), ({"knn": 2}, "knn"), ({"knn": 2.5}, "knn"),
    ({"threshold": 1.0}, "threshold"), ({"threshold": [0.8, 0.6]}, "threshold"), ({"strength": 0}, "strength"),
    ({"noise_scale": "big"}, "noise_scale"), ({"persistence": 0}, "persistence"), ({"lacunarity": 0.5}, "lacunarity"),
    ({"sign": "up"}, "sign"), ({"strength_mode": "rel"}, "strength_mode"), ({"orient": "camera"}, "orient"),
])
def test_bad_settings_raise_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Pnas3dSynthesizer(**options)


def test_built_through_the_registry_with_packaged_defaults() -> None:
    synth = create_synthesizer("plugin:pnas3d")
    assert synth.modality == "pointcloud" and synth.grid_res == 256 and synth.threshold == (0.7, 0.7)
    out, mask = synth(torch.from_numpy(height_field()), seed=0)
    assert out.shape == (64, 64, 3) and 0 < float(mask.mean()) < 1


@pytest.mark.shared_data
def test_real_mvtec_3d_ad_cloud_if_present() -> None:
    files = sorted(SHARED_3D.glob("mvtec_3d*/**/xyz/*.tiff"))[:1] if SHARED_3D.is_dir() else []
    if not files:
        pytest.skip("no MVTec 3D-AD xyz TIFF under shared/data/mvtec_3d*")
    from uad_plugins.data.pointcloud.io import read_pointcloud

    cloud = read_pointcloud(files[0])
    out, mask = create_synthesizer("plugin:pnas3d")(cloud.organised, seed=0)
    assert mask.any() and not mask.reshape(-1)[~cloud.valid].any()
    assert np.array_equal(out.reshape(-1, 3)[~mask.reshape(-1)], cloud.points[~mask.reshape(-1)])
