"""Run a signal synthesizer over ``.npy``/``.csv`` files (what ``uad synth`` calls for signal synthesizers).

The output folder is written whole or not at all (a temporary sibling, then one rename):

```
OUTPUT/signals/<name>.npy   [N * count, K, Q]  perturbed samples of input file <name>
OUTPUT/masks/<name>.npy     [N * count, K, Q]  uint8 point masks (1 = anomalous)
OUTPUT/manifest.json        synthesizer, options, seeds, and one entry per output sample
```

``find_signal_files`` and ``write_signal_files`` have the shape of ``uad synth``'s per-modality handlers
(``uad_plugins.cli.synth.MODALITIES``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uad_plugins.data.signals.io import ARRAY_SUFFIXES, list_files, read_array_file
from uad_plugins.data.signals.validation import MAX_TRIES, synthesize_checked
from uad_plugins.edge.atomic import staged_folder
from uad_plugins.errors import ConfigError

__all__ = ["find_signal_files", "synthesize_signal_files", "write_signal_files"]


def find_signal_files(inputs: str | Path) -> list[Path]:
    """The ``.npy``/``.csv`` files at ``inputs`` (a file or a folder, searched recursively); DataError when there
    are none."""
    return list_files(inputs, ARRAY_SUFFIXES, "input")


def _lead_count(file: Path) -> int:
    """Leads of a file when none are given: a 2-D ``.npy`` is one ``[K, Q]`` sample, a 3-D one ``[N, K, Q]``; CSV
    rows and 1-D arrays are single-lead samples."""
    if file.suffix.lower() != ".npy":
        return 1
    try:
        shape = np.load(file, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError, EOFError):
        return 1  # read_array_file reports the problem
    return int(shape[0]) if len(shape) == 2 else int(shape[1]) if len(shape) == 3 else 1


def write_signal_files(synthesizer: Any, files: list[Path], root: Path, tmp: Path, seed: int, count: int,
                       n_leads: int | None = None) -> list[dict[str, Any]]:
    """Perturb every sample of ``files`` ``count`` times into ``tmp/signals`` and ``tmp/masks``; return one manifest
    entry per output sample. ``n_leads=None`` reads a 2-D ``.npy`` as one ``[K, Q]`` sample."""
    if getattr(synthesizer, "modality", "image") != "signal":
        raise ConfigError(f"{type(synthesizer).__name__} works on {synthesizer.modality} data, not on signals.",
                          hint="Use a signal synthesizer, e.g. plugin:ecg_anomaly.")
    (tmp / "signals").mkdir(exist_ok=True)
    (tmp / "masks").mkdir(exist_ok=True)
    entries, j, used = [], 0, set()
    for file in files:
        samples = read_array_file(file, n_leads if n_leads is not None else _lead_count(file))
        name = "_".join(file.relative_to(root).with_suffix("").parts) if file.is_relative_to(root) else file.stem
        name = f"{name}_{file.suffix[1:].lower()}" if name in used else name  # a.npy next to a.csv
        used.add(name)
        signals, masks = [], []
        for row, sample in enumerate(samples):
            for k in range(count):
                item_seed = seed + j * count + k
                seeds = [item_seed + t * 1_000_003 for t in range(MAX_TRIES)]
                perturbed, mask = synthesize_checked(synthesizer, torch.from_numpy(sample), seeds, f"{file}[{row}]")
                signals.append(perturbed.astype(np.float32))
                masks.append(mask.astype(np.uint8))
                entries.append({"source": str(file), "row": row, "variant": k, "seed": item_seed,
                                "signal": f"signals/{name}.npy", "mask": f"masks/{name}.npy",
                                "index": len(signals) - 1, "anomaly_fraction": round(float(mask.mean()), 6)})
            j += 1
        np.save(tmp / "signals" / f"{name}.npy", np.stack(signals))
        np.save(tmp / "masks" / f"{name}.npy", np.stack(masks))
    return entries


def synthesize_signal_files(synthesizer: Any, inputs: str | Path, output: str | Path, *, seed: int = 0,
                            count: int = 1, n_leads: int | None = None, **options: Any) -> dict[str, Any]:
    """Apply a signal synthesizer (an instance, or a ``plugin:<name>`` reference built with ``options``) to every
    sample of the ``.npy``/``.csv`` files at ``inputs``; sample ``j`` variant ``k`` uses seed ``seed + j * count +
    k``. Returns the manifest (also written to ``output/manifest.json``); ``output`` is written whole or not at all.

    Example:
        >>> synthesize_signal_files("plugin:ecg_anomaly", "normals/", "synthetic/", seed=0, count=2)  # doctest: +SKIP
    """
    from uad_plugins.engine.run import component_record

    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}.")
    if isinstance(synthesizer, (str, dict)):
        from uad_plugins.factory import create_synthesizer

        synthesizer = create_synthesizer(synthesizer, **options)
    elif options:
        raise ConfigError("options are only used with a synthesizer reference, not an instance.")
    if getattr(synthesizer, "modality", "image") != "signal":
        raise ConfigError(f"{type(synthesizer).__name__} works on {synthesizer.modality} data, not on signals.",
                          hint="Use a signal synthesizer, e.g. plugin:ecg_anomaly.")
    files = find_signal_files(inputs)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} already exists and is not empty.", hint="Choose a new output folder.")
    root = Path(inputs) if Path(inputs).is_dir() else Path(inputs).parent
    with staged_folder(out) as tmp:
        entries = write_signal_files(synthesizer, files, root, tmp, seed, count, n_leads)
        manifest = {"synthesizer": component_record(synthesizer, "synthesizer"), "modality": "signal",
                    "options": options, "seed": seed, "count": count, "n_leads": n_leads, "input": str(inputs),
                    "items": entries}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return manifest
