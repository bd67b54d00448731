"""Score a folder of images on Ray Data with an exported bundle (docs/deploy.md, "Scale-out batch scoring on Ray
Data"): one compiled model per actor, rows as ``uad infer --format jsonl --no_overlays`` writes them.

    pip install 'uad_plugins[ray]'
    python examples/ray_batch_infer.py RUN/bundle_fp32 shots/ --resize --actors 2 --output scores.jsonl

Without ``--address`` a local Ray instance is started on this machine (loopback only) and stopped at the end; with
``--address auto`` (or ``HOST:PORT``) the script joins a running cluster, whose workers must see the bundle and the
images at the same paths. Exit status: 0 every image scored, 2 some error rows (or a bad invocation).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Score images with an exported bundle on Ray Data.")
    parser.add_argument("bundle", help="bundle folder written by 'uad export'")
    parser.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    parser.add_argument("--output", required=True, help="a new JSON Lines file: one row per image, in input order")
    parser.add_argument("--actors", type=int, default=2, help="actors, each holding one compiled model (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPUs and OpenVINO threads per actor (default 1)")
    parser.add_argument("--batch_size", type=int, default=8, help="images per batch sent to an actor (default 8)")
    parser.add_argument("--resize", action="store_true", help="resize images to the bundle's input size")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    parser.add_argument("--address", default=None, help="a running Ray cluster ('auto' or HOST:PORT); default: start "
                        "a local instance")
    parser.add_argument("--num_cpus", type=int, default=None, help="CPUs of the local instance (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # before ray is imported: a local instance listens on 127.0.0.1 only, and sends no usage statistics
    if args.address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from uad_plugins.errors import UadError
    from uad_plugins.scale import score_folder_with_ray

    started = not ray.is_initialized()  # a caller that already connected (a test, a notebook) keeps its instance
    if started:
        ray.init(address=args.address, num_cpus=args.num_cpus, include_dashboard=False)
    try:
        begin = time.perf_counter()
        rows = score_folder_with_ray(args.bundle, args.inputs, num_actors=args.actors,
                                     threads_per_actor=args.threads, batch_size=args.batch_size,
                                     resize=args.resize, device=args.device, output=args.output)
        seconds = time.perf_counter() - begin
    except UadError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 2
    finally:
        if started:
            ray.shutdown()
    failed = sum(row["error"] is not None for row in rows)
    print(f"{len(rows)} rows in {args.output} ({len(rows) / seconds:.1f} images/s with {args.actors} actor(s), "
          f"actor start-up included); {failed} failed" + (" (see the error column)" if failed else ""))
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
