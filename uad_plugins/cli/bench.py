"""``uad bench``: run a benchmark recipe and write bench.json, bench.md and PNG plots."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["bench"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uad bench",
        description="Benchmark models x data x precisions: fit and test each model with the uad engine, time the "
        "eager model, export an OpenVINO bundle per precision and measure its quality and speed. Writes "
        "bench.json, bench.md, accuracy_vs_latency.png and latency_by_backend.png.",
        epilog="examples: uad bench --recipe configs/bench/demo_quick.yaml --quick; "
        "uad bench --recipe configs/bench/mmae_ecg_mitbih.yaml (signals: sample/point AUROC columns)")
    parser.add_argument("--recipe", required=True, help="YAML recipe, e.g. configs/bench/pbas_bottle.yaml")
    parser.add_argument("--output", default=None, help="output folder (default: bench_results/<recipe stem>)")
    parser.add_argument("--seed", type=int, default=None,
                        help="run with this seed instead of the recipe's (default output gets a _seed<N> suffix); "
                        "repeat the command per seed for a seed spread")
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help="run only these model entries of the recipe (and those they take checkpoints from); "
                        "each row is fitted with the recipe's seed on its own, so its numbers are those of the "
                        "full run")
    parser.add_argument("--data", nargs="+", default=None, metavar="NAME",
                        help="run only these data entries of the recipe, by name or category (e.g. bsdata_pitting)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: at most 1 warm-up and 3 timed iterations (latencies are indicative only)")
    return parser


def bench(argv: list[str]) -> int:
    """Entry point of ``uad bench``."""
    args = _parser().parse_args(argv)
    from uad_plugins.bench.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    stem = Path(args.recipe).stem
    if args.seed is not None:
        recipe = recipe.with_seed(args.seed)
        stem = f"{stem}_seed{args.seed}"
    if args.models:
        recipe = recipe.with_models(args.models)
        stem = f"{stem}_{'_'.join(m.name for m in recipe.models)}"
    if args.data:
        recipe = recipe.with_data(args.data)
        stem = f"{stem}_{'_'.join(d.category or d.name for d in recipe.data)}"
    output = Path(args.output) if args.output else Path("bench_results") / stem

    from uad_plugins.cli.quiet import quiet_imports

    quiet_imports()
    from uad_plugins.bench.runner import run_benchmark

    report = run_benchmark(recipe, output, quick=args.quick, progress=lambda msg: print(msg, flush=True))
    rows = report["rows"]
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"bench: {len(rows) - len(failed)} of {len(rows)} rows ok in {report.get('seconds')} s; "
          f"report {output / 'bench.md'}")
    return 0 if len(failed) < len(rows) else 1
