"""The embedded demo dataset: procedural textured objects in the MVTec AD layout.

The images are drawn by code (numpy + PIL + scipy.ndimage) from a fixed seed, so the dataset ships with the
package and never needs a download. Every image has its own seed (derived from the category, the split and the
index), so generation is deterministic and independent of the order in which images are drawn. Normal images vary
in position, rotation, colour, illumination and noise; defects are drawn separately and pasted in, so the
ground-truth masks are exact (a mask pixel is 255 exactly where the defect changed the image).

Layout (as :class:`anomalib.data.MVTecAD` expects it)::

    <root>/<category>/train/good/000.png ...
    <root>/<category>/test/good/000.png ...
    <root>/<category>/test/<defect>/000.png ...
    <root>/<category>/ground_truth/<defect>/000_mask.png ...

The data is generated once into a cache folder (see :func:`default_demo_root`), atomically: it is written into
a temporary sibling folder that is renamed into place when complete; the marker file ``.complete`` holds the
version string.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from anomalib.data import MVTecAD
from PIL import Image, ImageDraw
from scipy import ndimage

from uad_edge.atomic import publish_folder
from uad_plugins.errors import DataError, close_matches

__all__ = [
    "DEMO_CATEGORIES",
    "DEMO_DEFECTS",
    "DEMO_VERSION",
    "UadDemo",
    "default_demo_root",
    "ensure_demo_dataset",
    "generate_demo_dataset",
]

#: the version string written into the marker file; bump it (and the ``v1`` folder) when the images change
DEMO_VERSION = "uad-demo-v1"
#: the marker file telling that a demo folder is complete
MARKER = ".complete"

#: the categories of the demo dataset
DEMO_CATEGORIES: tuple[str, ...] = ("weave", "washer", "tile")
#: the defect types per category
DEMO_DEFECTS: dict[str, tuple[str, ...]] = {
    "weave": ("scratch", "hole", "stain"),
    "washer": ("crack", "spot", "missing"),
    "tile": ("crack", "stain", "chip"),
}

SIZE = 256
N_TRAIN = 60
N_TEST_GOOD = 12
N_PER_DEFECT = 6
_SEED = 20_240_611
_MIN_DEFECT_PIXELS = 30

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)

Array = np.ndarray


# ----------------------------------------------------------------------------------------------------- helpers
def _smooth_noise(rng: np.random.Generator, cells: int) -> Array:
    """Low-frequency noise in about [-1, 1]: a ``cells x cells`` random grid upsampled (cubic) to the image."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    scale = cells / (SIZE - 1)
    return ndimage.map_coordinates(grid, [_YY * scale, _XX * scale], order=3, mode="nearest") * 0.6


def _rotated(theta: float, ox: float, oy: float) -> tuple[Array, Array]:
    """Pixel coordinates rotated by ``theta`` and shifted by ``(ox, oy)``."""
    c, s = np.cos(theta), np.sin(theta)
    return _XX * c + _YY * s + ox, -_XX * s + _YY * c + oy


def _blob(rng: np.random.Generator, cy: float, cx: float, radius: float) -> Array:
    """An irregular filled blob (a circle whose radius wobbles with the angle)."""
    dy, dx = _YY - cy, _XX - cx
    dist = np.hypot(dy, dx)
    phi = np.arctan2(dy, dx)
    wobble = np.ones_like(phi)
    for k in range(2, 6):
        wobble += rng.uniform(0.0, 0.16) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    return dist <= radius * wobble


def _stroke(rng: np.random.Generator, y: float, x: float, length: float, width: int, curvature: float) -> Array:
    """A curved polyline (a random walk of the heading) drawn with PIL, as a boolean mask."""
    heading = rng.uniform(0, 2 * np.pi)
    step = 5.0
    points = [(x, y)]
    for _ in range(max(2, int(length / step))):
        heading += rng.normal(0.0, curvature)
        x, y = x + step * np.cos(heading), y + step * np.sin(heading)
        points.append((round(x, 2), round(y, 2)))
    canvas = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(canvas).line(points, fill=255, width=width, joint="curve")
    return np.asarray(canvas) > 0


def _paint(img: Array, mask: Array, colour: Array | float, alpha: float) -> None:
    """Blend ``colour`` into ``img`` where ``mask`` is set (in place)."""
    img[mask] = img[mask] * (1.0 - alpha) + np.asarray(colour, dtype=np.float64) * alpha


def _grain(rng: np.random.Generator, sigma: float) -> Array:
    """Per-pixel sensor noise."""
    return rng.normal(0.0, sigma, (SIZE, SIZE, 3))


# ----------------------------------------------------------------------------------------------------- weave
def _render_weave(rng: np.random.Generator) -> tuple[Array, dict[str, Any]]:
    period = rng.uniform(14.5, 17.5)
    u, v = _rotated(np.deg2rad(rng.uniform(-6, 6)), *rng.uniform(0, 2 * period, 2))
    u, v = u / period, v / period
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    thread_jitter = rng.normal(0.0, 0.06, 64)
    warp = np.sin(np.pi * fu) ** 0.7 * (0.78 + 0.22 * np.sin(np.pi * fv)) + thread_jitter[iu.astype(int) % 64]
    weft = np.sin(np.pi * fv) ** 0.7 * (0.78 + 0.22 * np.sin(np.pi * fu)) + thread_jitter[iv.astype(int) % 64]
    top = np.where((iu + iv) % 2 == 0, warp, weft)
    base = np.array([0.74, 0.60, 0.42]) + rng.normal(0.0, 0.035, 3)
    light = 1.0 + 0.08 * _smooth_noise(rng, 4)
    img = base * ((0.3 + 0.7 * top) * light)[..., None] + _grain(rng, 0.02)
    return img, {}


def _weave_defect(kind: str, img: Array, aux: dict[str, Any], rng: np.random.Generator) -> Array:
    cy, cx = rng.uniform(40, SIZE - 40, 2)
    if kind == "scratch":
        mask = _stroke(rng, cy, cx, rng.uniform(70, 170), int(rng.integers(1, 4)), 0.12)
        colour = rng.uniform(0.9, 1.0) if rng.random() < 0.5 else rng.uniform(0.05, 0.15)
        _paint(img, mask, colour, 0.85)
    elif kind == "hole":
        mask = _blob(rng, cy, cx, rng.uniform(8, 20))
        img[mask] = rng.uniform(0.04, 0.12) + rng.normal(0.0, 0.02, (int(mask.sum()), 3))
    else:  # stain
        mask = _blob(rng, cy, cx, rng.uniform(12, 30))
        colour = [(0.35, 0.18, 0.08), (0.15, 0.25, 0.5), (0.45, 0.1, 0.15)][int(rng.integers(0, 3))]
        _paint(img, mask, colour, rng.uniform(0.45, 0.7))
    return mask


# ----------------------------------------------------------------------------------------------------- washer
def _render_washer(rng: np.random.Generator) -> tuple[Array, dict[str, Any]]:
    bg_col = np.array([0.22, 0.24, 0.27]) + rng.normal(0.0, 0.025, 3)
    background = bg_col * (1.0 + 0.25 * _smooth_noise(rng, 6))[..., None] + _grain(rng, 0.02)
    cy, cx = SIZE / 2 + rng.uniform(-14, 14, 2)
    outer = rng.uniform(78, 90)
    inner = outer * rng.uniform(0.38, 0.46)
    dist = np.hypot(_YY - cy, _XX - cx)
    phi = np.arctan2(_YY - cy, _XX - cx)
    cover = np.clip(outer - dist + 0.5, 0, 1) * np.clip(dist - inner + 0.5, 0, 1)
    notch_angle = rng.uniform(-np.pi, np.pi)  # a tab cut into the rim: the rotation is visible
    notch = (np.abs(np.angle(np.exp(1j * (phi - notch_angle)))) * dist < 6.0) & (dist > outer - 9.0)
    cover[notch] = 0.0
    metal = np.array([0.74, 0.74, 0.77]) + rng.normal(0.0, 0.03, 3)
    shine = (0.72 + 0.2 * np.cos(2 * (phi - rng.uniform(0, np.pi)))
             + 0.08 * (dist - inner) / (outer - inner) + 0.03 * np.sin(dist * 1.7))
    obj = metal * shine[..., None] + _grain(rng, 0.015)
    img = background * (1 - cover[..., None]) + obj * cover[..., None]
    return img, {"background": background, "cover": cover, "centre": (cy, cx), "radii": (inner, outer)}


def _washer_defect(kind: str, img: Array, aux: dict[str, Any], rng: np.random.Generator) -> Array:
    cover: Array = aux["cover"]
    cy, cx = aux["centre"]
    inner, outer = aux["radii"]
    on_object = cover > 0.5
    angle = rng.uniform(-np.pi, np.pi)
    radius = rng.uniform(inner + 6, outer - 6)
    py, px = cy + radius * np.sin(angle), cx + radius * np.cos(angle)
    if kind == "crack":
        mask = _stroke(rng, py, px, rng.uniform(25, 60), 2, 0.35) & on_object
        _paint(img, mask, rng.uniform(0.04, 0.12), 0.9)
    elif kind == "spot":
        mask = np.zeros_like(on_object)
        for _ in range(int(rng.integers(1, 4))):
            a, r = rng.uniform(-np.pi, np.pi), rng.uniform(inner + 5, outer - 5)
            mask |= _blob(rng, cy + r * np.sin(a), cx + r * np.cos(a), rng.uniform(4, 9))
        mask &= on_object
        colour = (0.5, 0.26, 0.1) if rng.random() < 0.6 else (0.08, 0.08, 0.08)
        _paint(img, mask, colour, 0.8)
    else:  # missing: a chunk bitten out of the rim, the background shows through
        mask = _blob(rng, cy + outer * np.sin(angle), cx + outer * np.cos(angle), rng.uniform(14, 24)) & (cover > 0)
        img[mask] = aux["background"][mask]
    return mask


# ----------------------------------------------------------------------------------------------------- tile
def _render_tile(rng: np.random.Generator) -> tuple[Array, dict[str, Any]]:
    tile = rng.uniform(60, 72)
    grout = rng.uniform(3.0, 5.0)
    theta = np.deg2rad(rng.uniform(-3, 3))
    ox, oy = rng.uniform(0, tile, 2)
    u, v = _rotated(theta, ox, oy)
    iu, iv = np.floor(u / tile), np.floor(v / tile)
    fu, fv = u - iu * tile, v - iv * tile
    edge = np.minimum(np.minimum(fu, tile - fu), np.minimum(fv, tile - fv))
    surface = np.clip(edge - grout / 2 + 0.5, 0, 1)
    tint = rng.normal(0.0, 0.03, (16, 16, 3))[iu.astype(int) % 16, iv.astype(int) % 16]
    period = tile / rng.uniform(5.5, 7.0)
    along = np.where((iu + iv) % 2 == 0, fu, fv)  # stripes alternate direction like parquet
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
    glaze = np.array([0.83, 0.80, 0.72]) + rng.normal(0.0, 0.03, 3)
    face = (glaze + tint) * (0.86 + 0.14 * stripes)[..., None]
    grout_col = np.array([0.45, 0.43, 0.40]) + rng.normal(0.0, 0.02, 3)
    light = (1.0 + 0.07 * _smooth_noise(rng, 3))[..., None]
    img = (face * surface[..., None] + grout_col * (1 - surface[..., None])) * light + _grain(rng, 0.018)
    return img, {"surface": surface, "tile": tile, "theta": theta, "offset": (ox, oy)}


def _tile_defect(kind: str, img: Array, aux: dict[str, Any], rng: np.random.Generator) -> Array:
    cy, cx = rng.uniform(40, SIZE - 40, 2)
    if kind == "crack":
        mask = _stroke(rng, cy, cx, rng.uniform(40, 110), int(rng.integers(1, 3)), 0.3)
        _paint(img, mask, rng.uniform(0.1, 0.2), 0.85)
    elif kind == "stain":
        mask = _blob(rng, cy, cx, rng.uniform(10, 26))
        colour = [(0.35, 0.2, 0.1), (0.2, 0.3, 0.5), (0.3, 0.35, 0.15)][int(rng.integers(0, 3))]
        _paint(img, mask, colour, rng.uniform(0.5, 0.75))
    else:  # chip: a piece broken off a tile corner shows the rough ceramic body
        tile, theta = aux["tile"], aux["theta"]
        ox, oy = aux["offset"]
        c, s = np.cos(theta), np.sin(theta)
        for _ in range(50):  # pick a tile corner inside the image
            u = (np.floor((cx * c + cy * s + ox) / tile) + rng.integers(0, 2)) * tile - ox
            v = (np.floor((-cx * s + cy * c + oy) / tile) + rng.integers(0, 2)) * tile - oy
            ky, kx = u * s + v * c, u * c - v * s
            if 24 <= ky <= SIZE - 24 and 24 <= kx <= SIZE - 24:
                break
            cy, cx = rng.uniform(40, SIZE - 40, 2)
        mask = _blob(rng, ky, kx, rng.uniform(9, 16)) & (aux["surface"] > 0)
        body = np.array([0.58, 0.50, 0.44]) * (1.0 + 0.15 * _smooth_noise(rng, 24))[..., None]
        img[mask] = body[mask] + rng.normal(0.0, 0.03, (int(mask.sum()), 3))
    return mask


_RENDER: dict[str, Callable[[np.random.Generator], tuple[Array, dict[str, Any]]]] = {
    "weave": _render_weave, "washer": _render_washer, "tile": _render_tile,
}
_DEFECT: dict[str, Callable[[str, Array, dict[str, Any], np.random.Generator], Array]] = {
    "weave": _weave_defect, "washer": _washer_defect, "tile": _tile_defect,
}


def _to_uint8(img: Array) -> Array:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _draw(category: str, group: str, index: int) -> tuple[Array, Array, Array | None]:
    """``(clean image, image, mask or None)``; the image differs from the clean one exactly where the mask is set."""
    cat_id = DEMO_CATEGORIES.index(category)
    groups = ("train", "good", *DEMO_DEFECTS[category])
    rng = np.random.default_rng(np.random.SeedSequence([_SEED, cat_id, groups.index(group), index]))
    for _ in range(20):
        img, aux = _RENDER[category](rng)
        clean = _to_uint8(img)
        if group in ("train", "good"):
            return clean, clean, None
        mask = _DEFECT[category](group, img, aux, rng)
        after = _to_uint8(img)
        mask &= np.any(clean != after, axis=-1)  # exact: only pixels the defect really changed
        after[~mask] = clean[~mask]
        if int(mask.sum()) >= _MIN_DEFECT_PIXELS:
            return clean, after, mask
    raise RuntimeError(f"demo: could not draw a {group} defect for {category}")  # pragma: no cover


def render_demo_image(category: str, group: str, index: int) -> tuple[Array, Array | None]:
    """Draw one demo image: ``(image uint8 [H, W, 3], mask bool [H, W] or None for a normal image)``.

    ``group`` is ``"train"``, ``"good"`` (normal test image) or a defect type of ``category``.
    """
    _, image, mask = _draw(category, group, index)
    return image, mask


# ----------------------------------------------------------------------------------------------------- files
def _save_png(array: Array, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def generate_demo_dataset(target: str | Path, categories: tuple[str, ...] = DEMO_CATEGORIES) -> Path:
    """Write the demo images of ``categories`` into ``target`` (no marker, not atomic; see ensure_demo_dataset)."""
    target = Path(target)
    for category in categories:
        base = target / category
        plan = [("train", "train/good", N_TRAIN), ("good", "test/good", N_TEST_GOOD)]
        plan += [(d, f"test/{d}", N_PER_DEFECT) for d in DEMO_DEFECTS[category]]
        for group, folder, count in plan:
            (base / folder).mkdir(parents=True, exist_ok=True)
            if group not in ("train", "good"):
                (base / "ground_truth" / group).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image, mask = render_demo_image(category, group, i)
                _save_png(image, base / folder / f"{i:03d}.png")
                if mask is not None:
                    _save_png(mask.astype(np.uint8) * 255, base / "ground_truth" / group / f"{i:03d}_mask.png")
    return target


def default_demo_root() -> Path:
    """Where the demo data is cached: ``$UAD_CACHE_DIR/demo/v1``, else ``~/.cache/uad_plugins/demo/v1``."""
    cache = os.environ.get("UAD_CACHE_DIR")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache" / "uad_plugins"
    return base / "demo" / "v1"


def _marker_version(root: Path) -> str | None:
    try:
        return (root / MARKER).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _remove_stale_temp_dirs(root: Path, max_age_s: float = 3600.0) -> None:
    """Remove temporary folders that a killed generation left next to ``root`` (older than ``max_age_s``)."""
    now = time.time()
    for stale in root.parent.glob(f".{root.name}.tmp-*"):
        try:
            if stale.is_dir() and now - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def ensure_demo_dataset(root: str | Path | None = None) -> Path:
    """Generate the demo dataset into ``root`` (default :func:`default_demo_root`) unless it is there; return it.

    Safe against concurrent callers: the data is written into a temporary sibling folder and renamed into place;
    if another process finished first, its folder is used.
    """
    root = Path(root).expanduser() if root is not None else default_demo_root()
    version = _marker_version(root)
    if version == DEMO_VERSION:
        return root
    if root.exists():
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # an empty folder: take it over
        else:
            found = f"version {version!r}" if version else f"no {MARKER} marker"
            raise DataError(
                f"Preparing the demo dataset in {root} failed: the folder exists but is not a complete demo dataset "
                f"of version {DEMO_VERSION!r} ({found}).",
                hint="Delete the folder so that it is generated again, or pass another root (--data.root).")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_dirs(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    except OSError as err:
        raise DataError(f"Preparing the demo dataset in {root} failed: cannot create a folder there ({err}).",
                        hint="Set UAD_CACHE_DIR to a writable folder, or pass another root (--data.root).") from err
    try:
        generate_demo_dataset(tmp)
        (tmp / MARKER).write_text(DEMO_VERSION + "\n", encoding="utf-8")
        try:
            publish_folder(tmp, root)
        except OSError as err:
            if _marker_version(root) != DEMO_VERSION:  # nobody else won the race: a real failure
                raise DataError(f"Preparing the demo dataset in {root} failed: cannot move it into place ({err}).",
                                hint="Delete the folder and try again, or pass another root (--data.root).") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


# ----------------------------------------------------------------------------------------------------- datamodule
class UadDemo(MVTecAD):
    """The embedded demo dataset as an anomalib datamodule (MVTec AD layout, generated on first use).

    Args:
        root: folder holding the categories; ``None`` uses :func:`default_demo_root`.
        category: one of :data:`DEMO_CATEGORIES`.
        train_batch_size: training batch size.
        eval_batch_size: validation and test batch size.
        num_workers: dataloader workers.
        seed: seed of anomalib's random splits.
        **kwargs: further :class:`anomalib.data.MVTecAD` arguments (augmentations, split modes and ratios).
    """

    def __init__(
        self,
        root: str | Path | None = None,
        category: str = DEMO_CATEGORIES[0],
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        seed: int | None = 0,
        **kwargs: Any,
    ) -> None:
        if category not in DEMO_CATEGORIES:
            near = close_matches(category, DEMO_CATEGORIES)
            raise DataError(
                f"UadDemo: unknown demo category {category!r}"
                + (f" (did you mean {near[0]!r}?)" if near else "") + ".",
                hint=f"Use one of: {', '.join(DEMO_CATEGORIES)}.")
        super().__init__(
            root=Path(root).expanduser() if root is not None else default_demo_root(),
            category=category,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            seed=seed,
            **kwargs,
        )

    @property
    def name(self) -> str:
        """Name of the datamodule."""
        return "UadDemo"

    def prepare_data(self) -> None:
        """Generate the demo data into the cache if needed (never downloads)."""
        ensure_demo_dataset(self.root)

    def _setup(self, _stage: str | None = None) -> None:
        ensure_demo_dataset(self.root)  # setup() without prepare_data() works too
        super()._setup(_stage)
