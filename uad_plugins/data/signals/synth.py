"""Signal files for synthesis: find the ``.npy``/``.csv`` inputs, and write a signal synthesizer's outputs.

These are the signal handler of the synthesis door (:data:`uad_plugins.synth.run.HANDLERS`;
:func:`uad_plugins.synth.run.synthesize` stages the output folder and writes the manifest):

```
OUTPUT/signals/<name>.npy   [N * count, K, Q]  perturbed samples of input file <name>
OUTPUT/masks/<name>.npy     [N * count, K, Q]  uint8 point masks (1 = anomalous)
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from uad_plugins.data.signals.io import ARRAY_SUFFIXES, list_files, read_array_file
from uad_plugins.data.signals.validation import MAX_TRIES, synthesize_checked
from uad_plugins.errors import ConfigError
from uad_plugins.protocols import modality_of

__all__ = ["find_signal_files", "write_signal_files"]


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
    if modality_of(synthesizer) != "signal":
        raise ConfigError(f"{type(synthesizer).__name__} works on {modality_of(synthesizer)} data, not on signals.",
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
