"""INT8 strategies side by side on one checkpoint: validation AUROC drop and latency vs FP32.

Rebuilds the checkpoint's honest validation split as ``uad export`` does, converts the model once, quantizes it
with each strategy of :mod:`uad_plugins.export.quantize` and measures, on the same validation samples, the gate's
AUROCs (raw outputs) and the median batch-1 latency of the FP32 and INT8 graphs in one process. Nothing is written
but the JSON report.

    python tools/int8_study.py --ckpt RUN/weights/lightning/model.ckpt --output int8_study.json \
        [--strategies ptq backbone accuracy_control] [--max_drop 0.01] [--ignore_types MatMul]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def _latency_ms(compiled, sample: np.ndarray, iterations: int) -> float:
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer({0: sample})
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        request.infer({0: sample})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--strategies", nargs="+", default=["ptq", "backbone", "accuracy_control"])
    parser.add_argument("--max_drop", type=float, default=0.01)
    parser.add_argument("--calibration_samples", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--ignore_types", nargs="*", default=[],
                        help="extra rows: ptq with these op types left in float, one row per type")
    args = parser.parse_args()

    import nncf
    import openvino as ov
    import torch

    from uad_edge.tempdirs import owned_tempdir
    from uad_plugins.engine import UadEngine
    from uad_plugins.engine.checkpoint import load_checkpoint
    from uad_plugins.export.graph import convert_raw, input_size_of
    from uad_plugins.export.quantize import budget_aurocs, calibration_items, quantize_int8
    from uad_plugins.export.samples import take_samples

    torch.set_num_threads(2)
    model, record = load_checkpoint(args.ckpt)
    model.eval()
    size = input_size_of(model)
    with owned_tempdir("uad_int8_study_") as work:
        datamodule = record.build_datamodule()
        engine = UadEngine(default_root_dir=work, seed=int(record.seed or 0), heatmaps=False,
                           validation_synthesizer=record.validation_synthesizer,
                           validation_ratio=record.validation_ratio)
        engine.open_run(model, datamodule, run_dir=work)
        engine.prepare_data(datamodule, "fit")
        validation = take_samples(datamodule.val_data, size, None, source="validation")
        calibration = take_samples(datamodule.train_data, size, args.calibration_samples, source="train",
                                   normal_only=True)
    raw, dynamic = convert_raw(model, size)
    batch = 8 if dynamic else 1
    core = ov.Core()
    fp32 = core.compile_model(raw, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    from uad_plugins.export.parity import raw_outputs

    def metrics(compiled) -> dict[str, float]:
        return budget_aurocs(*raw_outputs(compiled, validation, batch), validation)

    one = np.ascontiguousarray(validation.images[:1].numpy(), dtype=np.float32)
    reference = metrics(fp32)
    rows = [{"strategy": "fp32", **reference, "latency_ms": _latency_ms(fp32, one, args.iterations)}]
    print(json.dumps(rows[-1]), flush=True)
    variants = [(name, None) for name in args.strategies] + [(f"ptq_without_{t}", t) for t in args.ignore_types]
    for name, ignore in variants:
        started = time.perf_counter()
        try:
            if ignore is None:
                result = quantize_int8(raw, calibration, validation, strategy=name, max_drop=args.max_drop,
                                       batch_size=batch)
                quantized, extra = result.model, result.describe()
            else:
                items = calibration_items(calibration)
                quantized = nncf.quantize(raw, nncf.Dataset(items), subset_size=len(items),
                                          ignored_scope=nncf.IgnoredScope(types=[ignore], validate=False))
                extra = {}
            compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            values = metrics(compiled)
            row = {"strategy": name, **values, **{f"drop_{k}": reference[k] - v for k, v in values.items()},
                   "latency_ms": _latency_ms(compiled, one, args.iterations),
                   "quantize_s": round(time.perf_counter() - started, 1), **extra}
        except Exception as exc:  # noqa: BLE001 - a study: record the failure and go on
            row = {"strategy": name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"checkpoint": str(Path(args.ckpt).resolve()), "validation_samples": len(validation),
              "calibration_samples": len(calibration), "max_drop": args.max_drop, "rows": rows,
              "nncf": nncf.__version__, "openvino": ov.__version__}
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
