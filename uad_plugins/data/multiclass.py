"""Unified (multi-class) datamodules: one model trained on several categories at once.

anomalib trains one model per category. The datamodules here build one per-category datamodule of the underlying
anomalib class for each selected category (same seed, same split options), set each of them up, and concatenate
their train, validation and test sets. Every ``samples`` table gains a ``category`` column, so a sample always
says where it came from (``category_of`` maps image paths back to categories; the engine uses it for per-category
metrics).

``categories`` is ``"all"`` (every category present under ``root``), a list of names, or a comma-separated string.
Nothing is ever downloaded. An unknown category is a :class:`~uad_plugins.errors.DataError` listing the available
ones.

| class | per category | ``"all"`` means |
|---|---|---|
| :class:`UnifiedMVTecAD` | ``anomalib.data.MVTecAD`` | the MVTec AD categories with a folder under ``root`` |
| :class:`UnifiedVisa` | ``anomalib.data.Visa`` | the VisA categories found under ``root`` (raw or ``visa_pytorch``) |
| :class:`UnifiedUadDemo` | :class:`uad_plugins.data.UadDemo` | ``weave``, ``washer``, ``tile`` |
| :class:`CategoryFolders` | ``anomalib.data.Folder`` inside ``<root>/<category>`` | sub-folders with ``normal_dir`` |

Honest validation stays honest and balanced: :meth:`UnifiedDataModule.stratified_synthetic_validation` holds back
normals and makes synthetic anomalies per category (see :func:`uad_plugins.data.validation.apply_synthetic_validation`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pandas as pd
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import TestSplitMode, ValSplitMode
from torchvision.transforms.v2 import Transform

from uad_plugins.errors import DataError, UadError, close_matches

if TYPE_CHECKING:
    from anomalib.data.datasets.base.image import AnomalibDataset

    from uad_plugins.synth.base import Synthesizer

__all__ = [
    "CategoryFolders",
    "UnifiedDataModule",
    "UnifiedMVTecAD",
    "UnifiedUadDemo",
    "UnifiedVisa",
    "parse_categories",
]

logger = logging.getLogger(__name__)

#: the column added to every ``samples`` table of a unified datamodule
CATEGORY_COLUMN = "category"
#: how many category names a run-folder label spells out before it counts the rest
MAX_NAMED = 4


def parse_categories(value: str | Sequence[str] | None) -> list[str] | str:
    """Normalise a ``categories`` value: ``"all"``, or a list of unique names (from a list or ``"a,b"``)."""
    if value is None:
        return "all"
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if text.lower() == "all":
            return "all"
        names = [v.strip().strip("'\"") for v in text.split(",")]
    else:
        names = [str(v).strip() for v in value]
    names = [n for n in names if n]
    if not names:
        raise DataError("categories is empty.", hint="Give 'all' or a list of category names, e.g. [bottle, cable].")
    if names == ["all"]:
        return "all"
    return list(dict.fromkeys(names))


class UnifiedDataModule(AnomalibDataModule):
    """Base of the unified datamodules: one per-category datamodule per category, concatenated.

    Subclasses say which categories exist (:meth:`available_categories`) and how to build the datamodule of one
    category (:meth:`_make_member`).

    Args:
        categories: ``"all"``, a list of category names, or ``"a,b"``.
        train_batch_size: training batch size.
        eval_batch_size: validation and test batch size.
        num_workers: dataloader workers.
        train_augmentations: augmentations of the training images.
        val_augmentations: augmentations of the validation images.
        test_augmentations: augmentations of the test images.
        augmentations: augmentations used where no split-specific ones are given.
        test_split_mode: how each category's test set is made (anomalib ``TestSplitMode``).
        test_split_ratio: share of normals moved to the test set where a category has no normal test images.
        val_split_mode: how each category's validation set is made (``uad fit`` replaces it by honest validation).
        val_split_ratio: share used by ``val_split_mode``.
        seed: seed of every category's random splits.
    """

    #: name of the dataset, used in run folders
    dataset_name = "Unified"

    def __init__(
        self,
        categories: list[str] | str = "all",
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )
        self.requested_categories = parse_categories(categories)
        self._categories: list[str] | None = None
        self._path_categories: dict[str, str] = {}
        self._map_key: tuple[int, ...] = ()

    # ------------------------------------------------------------------ categories
    def available_categories(self) -> list[str]:
        """The categories this datamodule can use (for ``"all"``: every one present under the root)."""
        raise NotImplementedError

    def _check_category(self, category: str, available: list[str]) -> None:
        """Raise a DataError for a category that cannot be used (default: not among ``available``)."""
        if category not in available:
            self._unknown(category, available)

    def _unknown(self, category: str, available: Sequence[str]) -> None:
        near = close_matches(category, available)
        raise DataError(
            f"{self.name}: unknown category {category!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
            + f" under {self._where()}.",
            hint=f"Available categories: {', '.join(available) or '(none)'}; or use --data.categories all.")

    def _where(self) -> str:
        return str(getattr(self, "root", "") or self.name)

    @property
    def categories(self) -> list[str]:
        """The resolved category names (``"all"`` expanded), in a stable order."""
        if self._categories is None:
            available = self.available_categories()
            if self.requested_categories == "all":
                if not available:
                    raise DataError(f"{self.name}: no categories found under {self._where()}; uad_plugins never "
                                    "downloads data.", hint=self._layout_hint())
                self._categories = list(available)
            else:
                for category in self.requested_categories:
                    self._check_category(category, available)
                self._categories = list(self.requested_categories)
        return list(self._categories)

    def _layout_hint(self) -> str:
        return ("Expected layout: <root>/<category>/train/good/*.png, <root>/<category>/test/<defect>/*.png and "
                "<root>/<category>/ground_truth/<defect>/<name>_mask.png.")

    @property
    def category(self) -> str:
        """A readable label of the selection: ``"all"``, ``"a+b"`` or ``"a+b+c+d+3more"`` (run-folder name)."""
        if self.requested_categories == "all":
            return "all"
        names = list(self.requested_categories)
        if len(names) > MAX_NAMED:
            return "+".join(names[:MAX_NAMED]) + f"+{len(names) - MAX_NAMED}more"
        return "+".join(names)

    @category.setter
    def category(self, category: str) -> None:  # anomalib's base sets it; the selection is `categories`
        del category

    @property
    def name(self) -> str:
        """Name of the datamodule (the dataset; the category label is :attr:`category`)."""
        return self.dataset_name

    # ------------------------------------------------------------------ set-up
    def _make_member(self, category: str) -> AnomalibDataModule:
        """The datamodule of one category (split options and seed of this one)."""
        raise NotImplementedError

    def _split_options(self) -> dict[str, Any]:
        return {
            "train_batch_size": self.train_batch_size,
            "eval_batch_size": self.eval_batch_size,
            "num_workers": self.num_workers,
            "test_split_mode": self.test_split_mode,
            "test_split_ratio": self.test_split_ratio,
            "val_split_mode": self.val_split_mode,
            "val_split_ratio": self.val_split_ratio,
            "seed": self.seed,
        }

    def _setup_member(self, member: AnomalibDataModule, category: str) -> None:
        """Prepare (never download) and set up one category with clear errors."""
        from anomalib.data.datamodules.image.folder import Folder
        from anomalib.data.errors import MisMatchError

        from uad_plugins.data.checks import _check_folder_dirs, _expected_layout, _prepare_without_download

        try:
            _prepare_without_download(member)
            if isinstance(member, Folder):
                _check_folder_dirs(member)
            member.setup()
        except UadError as err:
            raise DataError(f"{self.name}, category {category!r}: {err.message}", hint=err.hint) from err
        except (FileNotFoundError, NotADirectoryError, ValueError, RuntimeError, MisMatchError) as err:
            raise DataError(f"{self.name}: setting up category {category!r} failed: {type(err).__name__}: "
                            f"{' '.join(str(err).split())}", hint=_expected_layout(member)) from err

    def _setup(self, _stage: str | None = None) -> None:
        parts: dict[str, list[AnomalibDataset]] = {"train": [], "val": [], "test": []}
        for category in self.categories:
            member = self._make_member(category)
            self._setup_member(member, category)
            for split, datasets in parts.items():
                dataset = getattr(member, f"{split}_data", None)
                if dataset is not None:
                    datasets.append(_with_category(dataset, category))
        for split, datasets in parts.items():
            if datasets:
                setattr(self, f"{split}_data", concat_datasets(datasets))
            elif hasattr(self, f"{split}_data"):
                delattr(self, f"{split}_data")

    def _create_test_split(self) -> None:
        """Each category made its own test split in :meth:`_setup`."""

    def _create_val_split(self) -> None:
        """Each category made its own validation split in :meth:`_setup`."""

    # ------------------------------------------------------------------ categories of samples
    def category_of(self, image_paths: Sequence[str | Path]) -> list[str]:
        """The category of each image path of this datamodule's samples (``""`` for a path it does not know)."""
        datasets = [getattr(self, f"{split}_data", None) for split in ("train", "val", "test")]
        key = tuple(id(d.samples) if d is not None else 0 for d in datasets)
        if key != self._map_key:
            mapping: dict[str, str] = {}
            for dataset in datasets:
                if dataset is not None and CATEGORY_COLUMN in dataset.samples:
                    mapping.update(zip(dataset.samples["image_path"].astype(str),
                                       dataset.samples[CATEGORY_COLUMN].astype(str)))
            self._path_categories, self._map_key = mapping, key
        return [self._path_categories.get(str(p), "") for p in image_paths]

    # ------------------------------------------------------------------ honest validation
    def stratified_synthetic_validation(self, synthesizer: Synthesizer, *, ratio: float = 0.2, seed: int = 0,
                                        anomalous_fraction: float = 0.5, output_dir: str | Path) -> dict[str, Any]:
        """Honest validation per category: every category holds back ``ratio`` of its own training normals.

        Runs :func:`uad_plugins.data.validation.apply_synthetic_validation` on each category's training set
        (images under ``output_dir/<category>/``) and concatenates the results, so that validation has normal and
        synthetic anomalous images of every category. Returns the summed description with a ``per_category`` part.
        """
        from uad_plugins.data.validation import apply_synthetic_validation

        if getattr(self, "train_data", None) is None:
            raise DataError("Synthetic validation: the datamodule has no training set.",
                            hint="Set it up first: uad_plugins.data.prepare_datamodule(datamodule).")
        samples = self.train_data.samples
        trains, vals, per_category = [], [], {}
        for category in self.categories:
            rows = [int(i) for i in (samples.index[samples[CATEGORY_COLUMN] == category])]
            if not rows:
                raise DataError(f"Synthetic validation: category {category!r} has no training images.",
                                hint=self._layout_hint())
            view = SimpleNamespace(train_data=self.train_data.subsample(rows),
                                   val_augmentations=self.val_augmentations)
            try:
                info = apply_synthetic_validation(view, synthesizer, ratio=ratio, seed=seed,
                                                  anomalous_fraction=anomalous_fraction,
                                                  output_dir=Path(output_dir) / category)
            except UadError as err:
                raise DataError(f"Category {category!r}: {err.message}", hint=err.hint) from err
            trains.append(view.train_data)
            vals.append(view.val_data)
            per_category[category] = {k: info[k] for k in ("n_train", "n_val_normal", "n_val_anomalous")}
        self.train_data = concat_datasets(trains)
        val = concat_datasets(vals)
        val.samples.attrs["task"] = "segmentation"
        if hasattr(val, "split"):
            val.split = "val"
        self.val_data = val
        self._is_setup = True  # the Trainer's setup() call must not redo the splits and drop this one
        description = {
            "mode": "synthetic",
            "synthesizer": type(synthesizer).__name__,
            "ratio": ratio,
            "seed": seed,
            "stratified_by": CATEGORY_COLUMN,
            **{k: sum(p[k] for p in per_category.values()) for k in ("n_train", "n_val_normal", "n_val_anomalous")},
            "dir": str(output_dir),
            "per_category": per_category,
        }
        self.uad_validation = description
        return description


def _with_category(dataset: AnomalibDataset, category: str) -> AnomalibDataset:
    """A copy of ``dataset`` whose samples carry a ``category`` column."""
    out = copy.copy(dataset)
    samples = dataset.samples.copy()
    samples[CATEGORY_COLUMN] = category
    samples.attrs = dict(dataset.samples.attrs)
    out.samples = samples
    return out


def concat_datasets(datasets: Sequence[AnomalibDataset]) -> AnomalibDataset:
    """Concatenate anomalib datasets (a copy of the first one holding every sample; tasks must agree or the
    result is a classification set)."""
    if not datasets:
        raise ValueError("concat_datasets: nothing to concatenate")
    out = copy.deepcopy(datasets[0])
    tasks = {str(d.samples.attrs.get("task", "")) for d in datasets}
    table = pd.concat([d.samples for d in datasets], ignore_index=True)
    if "mask_path" in table:
        table["mask_path"] = table["mask_path"].fillna("")
    table.attrs = dict(datasets[0].samples.attrs)
    if len(tasks) > 1:
        table.attrs["task"] = "classification"
    out.samples = table
    return out


# ----------------------------------------------------------------------------------------------------- datasets
class UnifiedMVTecAD(UnifiedDataModule):
    """MVTec AD, several categories in one datamodule (see the module docstring).

    Args:
        root: the MVTec AD folder (``<root>/<category>/train/good/...``).
        categories: ``"all"`` (the MVTec AD categories present under ``root``), or a list of names; a folder in
            the MVTec layout whose name is not an MVTec category can be named explicitly.
        train_batch_size: training batch size.
        eval_batch_size: validation and test batch size.
        num_workers: dataloader workers.
        train_augmentations: augmentations of the training images.
        val_augmentations: augmentations of the validation images.
        test_augmentations: augmentations of the test images.
        augmentations: augmentations used where no split-specific ones are given.
        test_split_mode: anomalib ``TestSplitMode`` of each category.
        test_split_ratio: see anomalib's ``MVTecAD``.
        val_split_mode: anomalib ``ValSplitMode`` of each category (``uad fit`` makes validation honest).
        val_split_ratio: see anomalib's ``MVTecAD``.
        seed: seed of every category's random splits.
    """

    dataset_name = "MVTecAD"

    def __init__(
        self,
        root: str | Path = "./datasets/MVTecAD",
        categories: list[str] | str = "all",
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__(categories, train_batch_size, eval_batch_size, num_workers, train_augmentations,
                         val_augmentations, test_augmentations, augmentations, test_split_mode, test_split_ratio,
                         val_split_mode, val_split_ratio, seed)
        self.root = Path(root).expanduser()
        self.categories  # noqa: B018 - an unknown or missing category is an error right away

    @staticmethod
    def known_categories() -> tuple[str, ...]:
        """The MVTec AD category names."""
        from anomalib.data.datasets.image.mvtecad import CATEGORIES

        return tuple(CATEGORIES)

    def available_categories(self) -> list[str]:
        """The MVTec AD categories with a folder under ``root``."""
        return [c for c in self.known_categories() if (self.root / c).is_dir()]

    def _check_category(self, category: str, available: list[str]) -> None:
        if category in available or (self.root / category / "train").is_dir():
            return
        if category in self.known_categories():
            raise DataError(f"{self.name}: category {category!r} not found at {self.root / category}; uad_plugins "
                            "never downloads data.",
                            hint=f"Put it there, or choose among the categories present: "
                                 f"{', '.join(available) or '(none)'}.")
        self._unknown(category, available)

    def _make_member(self, category: str) -> AnomalibDataModule:
        from anomalib.data import MVTecAD

        return MVTecAD(root=self.root, category=category, **self._split_options())


class UnifiedVisa(UnifiedDataModule):
    """VisA, several categories in one datamodule (see the module docstring).

    Args:
        root: the VisA folder (raw categories, or the ``visa_pytorch`` split anomalib makes from them).
        categories: ``"all"`` (the VisA categories found under ``root``), or a list of names.
        train_batch_size: training batch size.
        eval_batch_size: validation and test batch size.
        num_workers: dataloader workers.
        train_augmentations: augmentations of the training images.
        val_augmentations: augmentations of the validation images.
        test_augmentations: augmentations of the test images.
        augmentations: augmentations used where no split-specific ones are given.
        test_split_mode: anomalib ``TestSplitMode`` of each category.
        test_split_ratio: see anomalib's ``Visa``.
        val_split_mode: anomalib ``ValSplitMode`` of each category (``uad fit`` makes validation honest).
        val_split_ratio: see anomalib's ``Visa``.
        seed: seed of every category's random splits.
    """

    dataset_name = "Visa"

    def __init__(
        self,
        root: str | Path = "./datasets/visa",
        categories: list[str] | str = "all",
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__(categories, train_batch_size, eval_batch_size, num_workers, train_augmentations,
                         val_augmentations, test_augmentations, augmentations, test_split_mode, test_split_ratio,
                         val_split_mode, val_split_ratio, seed)
        self.root = Path(root).expanduser()
        self.categories  # noqa: B018 - an unknown or missing category is an error right away

    @staticmethod
    def known_categories() -> tuple[str, ...]:
        """The VisA category names."""
        from anomalib.data.datamodules.image.visa import VISA_CATEGORIES

        return tuple(VISA_CATEGORIES)

    def available_categories(self) -> list[str]:
        """The VisA categories present under ``root`` (raw or already split into ``visa_pytorch``)."""
        return [c for c in self.known_categories()
                if (self.root / "visa_pytorch" / c).is_dir() or (self.root / c).is_dir()]

    def _check_category(self, category: str, available: list[str]) -> None:
        if category in available:
            return
        if category in self.known_categories():
            raise DataError(f"{self.name}: category {category!r} not found under {self.root}; uad_plugins never "
                            "downloads data.",
                            hint=f"Put it there, or choose among the categories present: "
                                 f"{', '.join(available) or '(none)'}.")
        self._unknown(category, available)

    def _make_member(self, category: str) -> AnomalibDataModule:
        from anomalib.data import Visa

        return Visa(root=self.root, category=category, **self._split_options())


class UnifiedUadDemo(UnifiedDataModule):
    """The embedded demo dataset, several (default: all three) categories in one datamodule.

    Args:
        root: folder holding the demo categories; ``None`` uses :func:`uad_plugins.data.default_demo_root`.
        categories: ``"all"`` (``weave``, ``washer``, ``tile``) or a list of them.
        train_batch_size: training batch size.
        eval_batch_size: validation and test batch size.
        num_workers: dataloader workers.
        train_augmentations: augmentations of the training images.
        val_augmentations: augmentations of the validation images.
        test_augmentations: augmentations of the test images.
        augmentations: augmentations used where no split-specific ones are given.
        test_split_mode: anomalib ``TestSplitMode`` of each category.
        test_split_ratio: see :class:`uad_plugins.data.UadDemo`.
        val_split_mode: anomalib ``ValSplitMode`` of each category (``uad fit`` makes validation honest).
        val_split_ratio: see :class:`uad_plugins.data.UadDemo`.
        seed: seed of every category's random splits.
    """

    dataset_name = "UadDemo"

    def __init__(
        self,
        root: str | Path | None = None,
        categories: list[str] | str = "all",
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 0,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = 0,
    ) -> None:
        from uad_plugins.data.demo import default_demo_root

        super().__init__(categories, train_batch_size, eval_batch_size, num_workers, train_augmentations,
                         val_augmentations, test_augmentations, augmentations, test_split_mode, test_split_ratio,
                         val_split_mode, val_split_ratio, seed)
        self.root = Path(root).expanduser() if root is not None else default_demo_root()
        self.categories  # noqa: B018 - an unknown category is an error right away

    def available_categories(self) -> list[str]:
        """The demo categories (generated on first use)."""
        from uad_plugins.data.demo import DEMO_CATEGORIES

        return list(DEMO_CATEGORIES)

    def _make_member(self, category: str) -> AnomalibDataModule:
        from uad_plugins.data.demo import UadDemo

        return UadDemo(root=self.root, category=category, **self._split_options())


class CategoryFolders(UnifiedDataModule):
    """Your own data with one folder per category: anomalib's ``Folder`` inside each ``<root>/<category>``.

    Every folder option is relative to the category folder. The defaults fit the MVTec-like layout::

        <root>/<category>/train/good/*.png
        <root>/<category>/test/good/*.png            (optional: normal test images)
        <root>/<category>/test/<defect>/*.png        (anomalous test images, any defect names)
        <root>/<category>/ground_truth/<defect>/<name>_mask.png   (optional masks)

    and a flat layout works too: ``normal_dir="good", abnormal_dir="bad", mask_dir="masks"`` reads
    ``<root>/<category>/{good,bad,masks}``.

    Args:
        root: the folder holding one sub-folder per category.
        categories: ``"all"`` (every sub-folder of ``root`` that holds ``normal_dir``), or a list of names.
        normal_dir: normal training images (default ``train/good``).
        abnormal_dir: anomalous test images; ``None``: every sub-folder of ``test/`` except the normal one.
        normal_test_dir: normal test images; ``None``: ``test/good`` where it exists.
        mask_dir: masks of the anomalous images; ``None``: ``ground_truth/<defect>`` where every defect has one.
        normal_split_ratio: see anomalib's ``Folder`` (normals moved to test when a category has none there).
        extensions: image file extensions (default: anomalib's).
        name: dataset name used in run folders (default: the name of ``root``).
        train_batch_size: training batch size.
        eval_batch_size: validation and test batch size.
        num_workers: dataloader workers.
        train_augmentations: augmentations of the training images.
        val_augmentations: augmentations of the validation images.
        test_augmentations: augmentations of the test images.
        augmentations: augmentations used where no split-specific ones are given.
        test_split_mode: anomalib ``TestSplitMode`` of each category.
        test_split_ratio: see anomalib's ``Folder``.
        val_split_mode: anomalib ``ValSplitMode`` of each category (``uad fit`` makes validation honest).
        val_split_ratio: see anomalib's ``Folder``.
        seed: seed of every category's random splits.
    """

    def __init__(
        self,
        root: str | Path,
        categories: list[str] | str = "all",
        normal_dir: str | Path | list[str] = "train/good",
        abnormal_dir: str | Path | list[str] | None = None,
        normal_test_dir: str | Path | list[str] | None = None,
        mask_dir: str | Path | list[str] | None = None,
        normal_split_ratio: float = 0.2,
        extensions: list[str] | None = None,
        name: str | None = None,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.FROM_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__(categories, train_batch_size, eval_batch_size, num_workers, train_augmentations,
                         val_augmentations, test_augmentations, augmentations, test_split_mode, test_split_ratio,
                         val_split_mode, val_split_ratio, seed)
        self.root = Path(root).expanduser()
        self.normal_dir = normal_dir
        self.abnormal_dir = abnormal_dir
        self.normal_test_dir = normal_test_dir
        self.mask_dir = mask_dir
        self.normal_split_ratio = normal_split_ratio
        self.extensions = tuple(extensions) if extensions else None
        self._name = name
        self.categories  # noqa: B018 - an unknown or missing category is an error right away

    @property
    def name(self) -> str:
        """The dataset name: ``name`` if given, else the name of the root folder."""
        return self._name or self.root.name or "CategoryFolders"

    def _first_normal_dir(self) -> str:
        dirs = [self.normal_dir] if isinstance(self.normal_dir, (str, Path)) else list(self.normal_dir)
        return str(dirs[0])

    def available_categories(self) -> list[str]:
        """Every sub-folder of ``root`` (not hidden) that holds ``normal_dir``, sorted."""
        if not self.root.is_dir():
            raise DataError(f"{self.name}: the folder {self.root} does not exist.",
                            hint="Pass the folder holding one sub-folder per category as --data.root.")
        normal = self._first_normal_dir()
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / normal).is_dir())

    def _layout_hint(self) -> str:
        return (f"Expected layout: <root>/<category>/{self._first_normal_dir()}/*.png (normal training images), "
                "optionally <root>/<category>/test/<defect>/*.png and <root>/<category>/ground_truth/<defect>/.")

    def _folders(self, category: str) -> dict[str, Any]:
        """The Folder options of one category (``None`` options filled in from the MVTec-like layout)."""
        base = self.root / category
        normal_test = self.normal_test_dir
        if normal_test is None and (base / "test" / "good").is_dir():
            normal_test = "test/good"
        abnormal, masks = self.abnormal_dir, self.mask_dir
        if abnormal is None and (base / "test").is_dir():
            skip = {Path(str(normal_test)).name} if normal_test is not None else {"good"}
            defects = sorted(p.name for p in (base / "test").iterdir()
                             if p.is_dir() and p.name not in skip and not p.name.startswith("."))
            abnormal = [f"test/{d}" for d in defects] or None
            if masks is None and defects and all((base / "ground_truth" / d).is_dir() for d in defects):
                masks = [f"ground_truth/{d}" for d in defects]
        return {"normal_dir": self.normal_dir, "abnormal_dir": abnormal, "normal_test_dir": normal_test,
                "mask_dir": masks}

    def _make_member(self, category: str) -> AnomalibDataModule:
        from anomalib.data import Folder

        return Folder(name=category, root=self.root / category, normal_split_ratio=self.normal_split_ratio,
                      extensions=self.extensions, **self._folders(category), **self._split_options())
