"""Images/s of the Ray Data recipe (examples/ray_batch_infer.py) against `uad infer --format jsonl` on the same images,
one box (docs/deploy.md, "Scale-out batch scoring on Ray Data"). Each command runs as a user would run it, in a
subprocess, interleaved `--repeats` times; the Ray one starts (and stops) its own local instance each time. Prints
wall seconds (everything: start-up, bundle load, Ray start, scoring, writing) and the rate each command prints, and
checks that both wrote the same rows.

    python tools/ray_infer_bench.py --bundle RUN/bundle_fp32 --images FOLDER --n 200 --actors 2 --resize
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _images(source: Path, target: Path, n: int) -> None:
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        sys.exit(f"no images in {source}")
    target.mkdir(parents=True)
    for i in range(n):  # cycle through the source when it holds fewer than n
        shutil.copyfile(files[i % len(files)], target / f"{i:05d}{files[i % len(files)].suffix}")


def _run(argv: list[str]) -> tuple[float, str]:
    begin = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - begin
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--images", required=True, help="a folder of images (copied, cycled, to --n files)")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--resize", action="store_true")
    args = parser.parse_args()

    resize = ["--resize"] if args.resize else []
    with tempfile.TemporaryDirectory(prefix="ray_bench_") as tmp:
        folder = Path(tmp) / "images"
        _images(Path(args.images), folder, args.n)
        walls: dict[str, list[float]] = {"uad infer": [], "ray": []}
        rates: dict[str, list[float]] = {"uad infer": [], "ray": []}
        for repeat in range(args.repeats):
            out = Path(tmp) / f"infer_{repeat}"
            seconds, text = _run([sys.executable, "-m", "uad_plugins", "infer", args.bundle, str(folder), "--output",
                                  str(out), "--format", "jsonl", "--no_overlays", "--quiet", "--batch_size",
                                  str(args.batch_size), *resize])
            walls["uad infer"].append(seconds)
            rates["uad infer"].append(float(re.search(r"([\d.]+) images/s", text).group(1)))
            reference = _rows(out / "scores.jsonl")

            out = Path(tmp) / f"ray_{repeat}.jsonl"
            seconds, text = _run([sys.executable, str(REPO / "examples" / "ray_batch_infer.py"), args.bundle,
                                  str(folder), "--output", str(out), "--actors", str(args.actors), "--batch_size",
                                  str(args.batch_size), *resize])
            walls["ray"].append(seconds)
            rates["ray"].append(float(re.search(r"([\d.]+) images/s", text).group(1)))
            rows = _rows(out)
            assert [r["image"] for r in rows] == [r["image"] for r in reference]
            worst = max(abs(a["raw_score"] - b["raw_score"]) for a, b in zip(rows, reference))
            assert worst < 1e-5, worst
            print(f"repeat {repeat}: uad infer {walls['uad infer'][-1]:.1f} s wall, {rates['uad infer'][-1]:.1f} "
                  f"images/s; ray {walls['ray'][-1]:.1f} s wall, {rates['ray'][-1]:.1f} images/s; rows equal "
                  f"(max |raw_score| difference {worst:.1e})", flush=True)
        print(f"\n{args.n} images, batch {args.batch_size}, ray with {args.actors} actor(s); median of {args.repeats}")
        print("| command | wall s (all included) | images/s as printed |")
        print("|---|---|---|")
        for name in walls:
            print(f"| {name} | {statistics.median(walls[name]):.1f} | {statistics.median(rates[name]):.1f} |")


if __name__ == "__main__":
    main()
