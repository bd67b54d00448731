"""Streaming vs synchronous edge inference: images/s on the same files in one process, and peak RSS in fresh
processes at two input counts (issue 16; the numbers in docs/deploy.md "Streaming inference").

    nice -n 5 python tools/infer_streaming_bench.py --bundle RUN/bundle_fp32 --n 2000 --small 200

Without ``--bundle`` a tiny PBAS (random weights, 64 px, as in the tests) is fitted on the demo data and exported
into a temporary folder first (about two minutes). ``--n`` small PNGs of the bundle's input size are generated in a
temporary folder. Throughput: ``model.predict(files)`` (today's path: every image decoded and stacked, then
synchronous requests of ``--batch_size``) and ``model.predict_iter(files)`` (chunks, async queue, throughput hint),
alternated ``--repeats`` times in one process; the ratio is of medians. Peak RSS: each path in a fresh child process
on the first ``--small`` and on all ``--n`` files, every result consumed and dropped; the child warms up on 16
files, resets its peak (``/proc/self/clear_refs``, Linux) and reports ``VmHWM`` (peak while scoring) and how much
it rose above the RSS before scoring. The cores may be
shared with other work: compare the ratio, not the absolute numbers, and say so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _tiny_bundle(root: Path) -> Path:
    from uad_plugins.cli.main import main

    tiny = ["--model", "plugin:pbas", "--model.pretrained", "false", "--model.image_size", "64",
            "--model.pretrain_embed_dimension", "64", "--model.target_embed_dimension", "64",
            "--model.dsc_hidden", "32",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    assert main(["fit", *tiny, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--heatmaps",
                 "false", "--default_root_dir", str(root / "runs"), "--data.category", "washer"]) == 0
    assert main(["export", "--ckpt_path", str(next((root / "runs").rglob("model.ckpt"))), "--output",
                 str(root / "bundle")]) == 0
    return root / "bundle"


def _images(folder: Path, n: int, size: tuple[int, int]) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _run(model: object, path: str, files: list[str], batch_size: int) -> float:
    """Score ``files`` with one path; returns seconds."""
    start = time.perf_counter()
    if path == "sync":
        model.predict(files, batch_size=batch_size)  # type: ignore[attr-defined]
    else:
        for _ in model.predict_iter(files, batch_size=batch_size):  # type: ignore[attr-defined]
            pass
    return time.perf_counter() - start


def _child(args: argparse.Namespace) -> None:
    from uad_edge import load_bundle

    files = sorted(str(p) for p in Path(args.images).glob("*.png"))[:args.count]
    model = load_bundle(args.bundle)
    _run(model, args.child, files[:16], args.batch_size)  # compile and warm up
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_mb("VmRSS")
    seconds = _run(model, args.child, files, args.batch_size)
    peak = _status_mb("VmHWM")
    print(json.dumps({"path": args.child, "n": len(files), "seconds": seconds, "peak_rss_mb": peak,
                      "rise_mb": peak - before}))


def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` memory line in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="an image bundle (default: fit and export a tiny PBAS)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("sync", "stream"), help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    with tempfile.TemporaryDirectory(prefix="uad-stream-bench-") as tmp:
        bundle = Path(args.bundle) if args.bundle else _tiny_bundle(Path(tmp))
        from uad_edge import load_bundle

        model = load_bundle(bundle)
        files = _images(Path(tmp) / "images", args.n, model.input_size)
        _run(model, "stream", files[:64], args.batch_size)  # compile the throughput copy, warm both
        _run(model, "sync", files[:64], args.batch_size)
        times: dict[str, list[float]] = {"sync": [], "stream": []}
        for _ in range(args.repeats):
            for path in times:
                times[path].append(_run(model, path, files, args.batch_size))
        rate = {path: args.n / statistics.median(t) for path, t in times.items()}
        print(f"images/s on {args.n} images of {model.input_size}, batch {args.batch_size}, median of "
              f"{args.repeats} (one process): sync {rate['sync']:.1f}, stream {rate['stream']:.1f}, "
              f"ratio {rate['stream'] / rate['sync']:.2f}")
        rows = []
        for path in ("sync", "stream"):
            for count in (args.small, args.n):
                out = subprocess.run([sys.executable, __file__, "--child", path, "--images", str(Path(tmp) / "images"),
                                      "--count", str(count), "--bundle", str(bundle), "--batch_size",
                                      str(args.batch_size)], capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print("| path | inputs | seconds | peak RSS while scoring (MB) | rise above RSS before (MB) |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['path']} | {row['n']} | {row['seconds']:.1f} | {row['peak_rss_mb']:.0f} | "
                  f"{row['rise_mb']:.0f} |")
        print(json.dumps({"images_per_s": rate, "times": times, "rss": rows}))


if __name__ == "__main__":
    main()
