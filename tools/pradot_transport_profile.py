"""Where PRADOT's training time goes, and how many Sinkhorn iterations its transport plans need (issue 15).

Reads real data the way ``uad fit`` does (the honest validation split of the engine: seed 0, 20 % of the training
normals held back, half of those made anomalous by ``plugin:perlin``) and never reads the test split. The packaged
model (Lite0 ``blocks.4``, 224 px, 14x14 grid, K = 16, alpha 0.3, reg 0.01, batch 8) unless told otherwise.

    nice -n 5 python tools/pradot_transport_profile.py --data bsdata                       # all three sections
    nice -n 5 python tools/pradot_transport_profile.py --data bsdata --sections profile    # time split only
    nice -n 5 python tools/pradot_transport_profile.py --data bottle --sections epoch --settings 100 tol:1e-3

Sections (each prints a table; ``--output FILE.json`` also writes every number):

``profile``
    One training batch split into backbone, cost matrix, Sinkhorn and prototype update, and the per-epoch
    validation work (the held-out transport-loss selection on the validation normals, and the prediction pass over
    the whole validation set). The Sinkhorn is timed four ways, interleaved in one process (medians of
    ``--repeats``): the solver before issue 15 (kept below, verbatim), the log-domain loop before the stabilised
    scaling form (kept below as :func:`log_domain_sinkhorn`; the baseline of the ratios and of the epoch estimate),
    the current one with POT's rule (tolerance 0, 100 iterations) and the current default. Absolute times are only
    meaningful on quiet cores; the ratios are what to read when other work shares the machine.
``convergence``
    For ``--trace-batches`` training batches and as many batches of validation normals, at the random initial
    prototypes and after one epoch of training: per iteration (1 .. ``--trace-iterations``) the L1 row-marginal
    violation the tolerance rule reads, POT's L2 column violation (what ``stopThr`` is compared with) and the
    transport cost ``<plan, M>`` relative to its value at the last traced iteration. Then the iteration at which
    each tolerance of ``--tolerances`` stops.
``solver``
    The package's solver (stabilised scaling form) against the log-domain loop and POT's ``sinkhorn_log`` (float32
    and float64) at 100 iterations on ``--trace-batches`` real training batches, at the initial prototypes and after
    ``--epochs`` epochs (``--states``): interleaved times and plan differences.
``epoch``
    ``--epochs`` epochs of prototype updates on cached features from the same seeded prototypes and batch order,
    once per setting of ``--settings`` (``N``: N iterations, tolerance off; ``tol:T``: tolerance T, at most 100
    iterations; a ``log:`` prefix, e.g. ``log:100``, runs the log-domain loop instead of the package's solver), the
    settings interleaved batch by batch. For each: Sinkhorn and step time per batch, iterations and absorptions,
    how far the prototypes end from the first setting's (relative to how far that one moved), the held-out
    transport loss of the validation normals (with the setting's own solver, and with the package's 100 iterations
    for all), the first validation batch's plan against the first setting's, the image AUROC of the validation set
    (normals vs synthetic anomalies, never the test set) with the prototypes after the epoch, and the epoch time
    (training steps + held-out selection, with and without the backbone's share) with its ratio to the first
    setting's.

    nice -n 5 python tools/pradot_transport_profile.py --data bsdata --sections solver epoch --settings log:100 100 \
        --train-batches 12 --trace-batches 2 --repeats 3
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

DATA_ROOT = Path("../shared/data")
DEFAULT_TOLERANCE_LIST = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
TRACE_POINTS = (1, 2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200)


# ---------------------------------------------------------------------------------------------- the old solver
def _log_domain_logsumexp_(values: torch.Tensor, dim: int, clamp: bool = True) -> torch.Tensor:
    peak = values.amax(dim=dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    values.sub_(peak)
    if clamp:
        values.clamp_(min=-80.0)
    values.exp_()
    return values.sum(dim=dim).log_().add_(peak.squeeze(dim))


def previous_sinkhorn_plan(cost: torch.Tensor, reg: float, num_iterations: int) -> torch.Tensor:
    """``sinkhorn_plan`` as it was before issue 15 (commit 5dcafdf: the log-domain loop without the exp clamp)."""
    return log_domain_sinkhorn(cost, reg, num_iterations, clamp=False).plan


def log_domain_sinkhorn(cost: torch.Tensor, reg: float, num_iterations: int, tolerance: float = 0.0,
                        stop_threshold: float = 1e-9, clamp: bool = True) -> Any:
    """``sinkhorn_log`` as it was before the stabilised scaling form (commit 218dfe0, unchanged up to f0db0da: the
    log-domain loop with the exp clamp and the tolerance rule, ~10 passes over the matrix per iteration): the
    baseline of the "old vs new" ratios; ``clamp=False`` is the loop of commit 5dcafdf, before issue 15). Returns the
    package's ``SinkhornResult``."""
    from uad_plugins.plugins.pradot.torch_model import SinkhornResult

    n, k = cost.shape
    scaled = cost / -reg
    work = torch.empty_like(scaled)
    log_a, log_b = -math.log(n), -math.log(k)
    u = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    v = torch.zeros(k, dtype=cost.dtype, device=cost.device)
    violation = math.nan
    iterations = 0
    for iteration in range(num_iterations):
        iterations = iteration + 1
        torch.add(scaled, u[:, None], out=work)
        v = _log_domain_logsumexp_(work, 0, clamp).neg_().add_(log_b)
        torch.add(scaled, v[None, :], out=work)
        previous, u = u, _log_domain_logsumexp_(work, 1, clamp).neg_().add_(log_a)
        if tolerance > 0:
            violation = float((previous - u).exp_().sub_(1.0).abs_().mean())
            if violation <= tolerance:
                break
        elif iteration % 10 == 0:
            torch.add(scaled, u[:, None], out=work)
            work.add_(v[None, :])
            column_mass = (work.clamp_(min=-80.0) if clamp else work).exp_().sum(dim=0)
            violation = float(torch.linalg.vector_norm(column_mass - 1.0 / k))
            if violation < stop_threshold:
                break
    torch.add(scaled, u[:, None], out=work)
    work.add_(v[None, :])
    return SinkhornResult((work.clamp_(min=-80.0) if clamp else work).exp_(), iterations, violation)


# ---------------------------------------------------------------------------------------------- data
def honest_split(which: str, root: Path, seed: int, workdir: Path) -> tuple[list[str], list[str], list[int]]:
    """The engine's honest split: training image paths, validation image paths and their labels (0 normal, 1
    synthetic anomaly). The test split is set up by anomalib but never read here."""
    from anomalib.data import Folder, MVTecAD
    from anomalib.data.utils import ValSplitMode

    from uad_plugins.data.checks import prepare_datamodule
    from uad_plugins.data.validation import apply_synthetic_validation
    from uad_plugins.factory import create_synthesizer

    if which == "bsdata":
        datamodule = Folder(name="bsdata_pitting", root=root / "bsdata_pitting", normal_dir="train/good",
                            abnormal_dir="test/pitting", normal_test_dir="test/good", mask_dir="ground_truth/pitting",
                            num_workers=0)
    else:
        datamodule = MVTecAD(root=root / "mvtec_ad_256", category="bottle", num_workers=0)
    datamodule.val_split_mode = ValSplitMode.NONE
    prepare_datamodule(datamodule, "fit")
    apply_synthetic_validation(datamodule, create_synthesizer("plugin:perlin"), ratio=0.2, seed=seed,
                               output_dir=workdir / "validation")
    train = [str(p) for p in datamodule.train_data.samples["image_path"]]
    val = datamodule.val_data.samples
    return train, [str(p) for p in val["image_path"]], [int(x) for x in val["label_index"]]


def load_images(paths: list[str], transform: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Pre-processed images ``[n, 3, S, S]`` (read as the datamodule reads them, then the model's transform)."""
    from uad_plugins.data.checks import read_rgb_image

    out = []
    for path in paths:
        image = torch.from_numpy(read_rgb_image(path)).permute(2, 0, 1).float().div(255.0)
        out.append(transform(image[None])[0])
    return torch.stack(out)


def batches(count: int, batch_size: int, seed: int, epoch: int = 0, shuffle: bool = True) -> list[torch.Tensor]:
    """Index batches: a seeded shuffle per epoch (the last batch may be short, as anomalib's loader keeps it)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1000 + epoch)) if shuffle \
        else torch.arange(count)
    return list(order.split(batch_size))


# ---------------------------------------------------------------------------------------------- helpers
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_times(candidates: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time of each candidate, run interleaved (a, b, c, a, b, c, ...) so load changes hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(timed(fn)[0])
    return {name: statistics.median(values) for name, values in times.items()}


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).float().sum() + 0.5 * (pos[:, None] == neg[None, :]).float().sum()
    return float(greater / (len(pos) * len(neg)))


def parse_setting(text: str) -> tuple[str, int, float]:
    """``"100"`` -> (package solver, 100 iterations, tolerance off); ``"tol:1e-3"`` -> (package, 100, 1e-3);
    ``"tol:1e-3@50"`` -> (package, 50, 1e-3); a ``log:`` prefix (``"log:100"``) runs :func:`log_domain_sinkhorn`,
    the log-domain loop before the stabilised scaling form, instead of the package's solver."""
    solver = "new"
    if text.startswith("log:"):
        solver, text = "log", text[4:]
    if text.startswith("tol:"):
        tol, _, cap = text[4:].partition("@")
        return solver, int(cap or 100), float(tol)
    return solver, int(text), 0.0


def solver_function(name: str) -> Callable[..., Any]:
    """``"new"``: the package's ``sinkhorn_log``; ``"log"``: :func:`log_domain_sinkhorn`."""
    from uad_plugins.plugins.pradot.torch_model import sinkhorn_log

    return {"new": sinkhorn_log, "log": log_domain_sinkhorn}[name]


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


# ---------------------------------------------------------------------------------------------- sections
class Context:
    """Model, data and cached features shared by the sections."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        from uad_plugins.plugins.pradot.model import Pradot

        self.args = args
        torch.manual_seed(args.seed)
        self.module = Pradot(backbone=args.backbone, layers=[args.layer], image_size=args.image_size,
                             num_prototypes=args.num_prototypes, alpha=args.alpha, reg=args.reg)
        self.net = self.module.model.eval()
        self.bank = self.net.banks[0]
        self.initial = self.bank.prototypes.clone()
        train, val, labels = honest_split(args.data, Path(args.data_root), args.seed, workdir)
        transform = self.module.pre_processor.transform
        self.train_images = load_images(train, transform)
        self.val_images = load_images(val, transform)
        self.val_labels = torch.tensor(labels)
        print(f"data {args.data}: {len(train)} training images, {len(val)} validation images "
              f"({int((self.val_labels == 0).sum())} normal, {int(self.val_labels.sum())} synthetic anomalies)")
        self.train_features = self._features(self.train_images)
        self.val_features = self._features(self.val_images)
        self.val_normals = self.val_features[self.val_labels == 0]
        self.trained: dict[tuple[int, float], torch.Tensor] = {}  # (iterations, tolerance) -> prototypes after

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net.features(images[i:i + 8])[0] for i in range(0, len(images), 8)])

    def train_indices(self, epoch: int = 0) -> list[torch.Tensor]:
        """The epoch's training batches as image indices (the first ``--train-batches`` when that is set)."""
        found = batches(len(self.train_features), self.args.batch_size, self.args.seed, epoch)
        return found[:self.args.train_batches] if self.args.train_batches else found

    def train_batches(self, epoch: int = 0) -> list[torch.Tensor]:
        """The epoch's training batches (the first ``--train-batches`` of them when that is set)."""
        found = [self.train_features[idx] for idx in batches(len(self.train_features), self.args.batch_size,
                                                             self.args.seed, epoch)]
        return found[:self.args.train_batches] if self.args.train_batches else found

    def val_normal_batches(self) -> list[torch.Tensor]:
        return list(self.val_normals.split(self.args.batch_size))

    def cost(self, features: torch.Tensor) -> torch.Tensor:
        cost = self.bank.fused_cost(features.float(), self.bank.prototypes.float(), "batch")
        return cost.reshape(features.shape[0] * features.shape[1], -1)

    def cost_for(self, features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        cost = self.bank.fused_cost(features.float(), prototypes.float(), "batch")
        return cost.reshape(features.shape[0] * features.shape[1], -1)

    def train_epochs(self, epochs: int, num_iterations: int, tolerance: float) -> dict[str, float]:
        """``epochs`` epochs of updates from the initial prototypes; Sinkhorn time and iterations per batch."""
        from uad_plugins.plugins.pradot.torch_model import sinkhorn_log

        bank, args = self.bank, self.args
        bank.prototypes.copy_(self.initial)
        if (num_iterations, tolerance) in self.trained and not self.args.retime:
            bank.prototypes.copy_(self.trained[num_iterations, tolerance])
            return {"sinkhorn_s_per_batch": math.nan, "iterations_per_batch": math.nan}
        solve_time, iterations, count = 0.0, 0, 0
        for epoch in range(epochs):
            for features in self.train_batches(epoch):
                cost = self.cost(features)
                seconds, result = timed(lambda c=cost: sinkhorn_log(c, args.reg, num_iterations, tolerance))
                solve_time += seconds
                iterations += result.iterations
                count += 1
                flat = features.float().reshape(-1, features.shape[-1])
                mass = result.plan.sum(dim=0)
                means = (result.plan.T @ flat) / mass.clamp_min(1e-12)[:, None]
                current = bank.prototypes.float()
                means = torch.where(mass[:, None] > 0, means, current)
                bank.prototypes.copy_(args.ema * current + (1.0 - args.ema) * means)
        self.trained[num_iterations, tolerance] = bank.prototypes.clone()
        return {"sinkhorn_s_per_batch": solve_time / count, "iterations_per_batch": iterations / count}

    def val_transport_loss(self, num_iterations: int, tolerance: float, solver: str = "new") -> float:
        """Mean held-out transport cost of the validation normals (what model selection compares), with the
        package's solver (``"new"``) or the log-domain loop before it (``"log"``)."""
        total = 0.0
        for features in self.val_normal_batches():
            cost = self.cost(features)
            plan = solver_function(solver)(cost, self.args.reg, num_iterations, tolerance).plan
            total += float((plan * cost).sum()) * len(features)
        return total / len(self.val_normals)

    def val_auroc(self) -> float:
        """Image AUROC of the validation set (held-back normals vs synthetic anomalies) with the current
        prototypes: the score is the maximum nearest-prototype cost, as inference computes it."""
        self.bank.select()
        scores = torch.cat([self.bank.nearest_cost(f).amax(dim=1) for f in self.val_features.split(8)])
        return auroc(scores, self.val_labels)


def section_profile(ctx: Context, report: dict[str, Any]) -> None:
    """Time split of one training batch, and of the per-epoch validation work."""
    from uad_plugins.plugins.pradot.torch_model import sinkhorn_log

    args, net, bank = ctx.args, ctx.net, ctx.bank
    tol = args.tolerance
    idx = batches(len(ctx.train_images), args.batch_size, args.seed)[0]
    images = ctx.train_images[idx]
    features = net.features(images)[0]
    cost = ctx.cost(features)
    plan = sinkhorn_log(cost, args.reg, 100).plan
    default = sinkhorn_log(cost, args.reg, 100, tol)

    def update() -> None:
        flat = features.float().reshape(-1, features.shape[-1])
        mass = plan.sum(dim=0)
        (plan.T @ flat) / mass.clamp_min(1e-12)[:, None]

    times = median_times({
        "backbone": lambda: net.features(images),
        "cost matrix": lambda: ctx.cost(features),
        "sinkhorn before issue 15 (100 it)": lambda: previous_sinkhorn_plan(cost, args.reg, 100),
        "sinkhorn before (log domain, 100 it)": lambda: log_domain_sinkhorn(cost, args.reg, 100),
        "sinkhorn now, POT rule (100 it)": lambda: sinkhorn_log(cost, args.reg, 100),
        f"sinkhorn now, tolerance {tol:g} ({default.iterations} it)": lambda: sinkhorn_log(cost, args.reg, 100, tol),
        "prototype update": update,
    }, args.repeats)
    before = times["sinkhorn before (log domain, 100 it)"]
    rows = [[name, seconds, seconds / before] for name, seconds in times.items()]
    print(f"\n## One training batch of {len(idx)} images ({cost.shape[0]} x {cost.shape[1]} cost matrix), median of "
          f"{args.repeats}, interleaved; shared cores: read the ratios")
    print(table(rows, ["step", "seconds", "/ sinkhorn before"]))
    report["batch"] = {"times_s": times, "cost_shape": list(cost.shape), "default_iterations": default.iterations}

    # per epoch: model selection (held-out transport loss of the validation normals) and the prediction pass
    val_images = ctx.val_images
    normals = val_images[ctx.val_labels == 0]

    def selection(num_iterations: int, tolerance: float, previous: bool = False) -> None:
        for chunk in normals.split(args.batch_size):
            feats = net.features(chunk)[0]
            if previous:
                c = ctx.cost(feats)
                (log_domain_sinkhorn(c, args.reg, num_iterations).plan * c).sum()
            else:
                bank.transport_loss(feats, args.reg, num_iterations, tolerance)

    def predict() -> None:
        with torch.no_grad():
            for chunk in val_images.split(args.batch_size):
                net(chunk)

    vtimes = median_times({
        "selection before (100 it)": lambda: selection(100, 0.0, previous=True),
        f"selection now, tolerance {tol:g}": lambda: selection(100, tol),
        "validation prediction pass": predict,
    }, max(1, args.repeats // 2))
    n_train_batches = len(batches(len(ctx.train_images), args.batch_size, args.seed))
    per_batch_before = times["backbone"] + times["cost matrix"] + before + times["prototype update"]
    per_batch_now = (times["backbone"] + times["cost matrix"] + times["prototype update"]
                     + times[f"sinkhorn now, tolerance {tol:g} ({default.iterations} it)"])
    epoch_before = n_train_batches * per_batch_before + vtimes["selection before (100 it)"] \
        + vtimes["validation prediction pass"]
    epoch_now = n_train_batches * per_batch_now + vtimes[f"selection now, tolerance {tol:g}"] \
        + vtimes["validation prediction pass"]
    print(f"\n## Per epoch: validation ({len(normals)} normals for selection, {len(val_images)} images predicted)")
    print(table([[name, seconds] for name, seconds in vtimes.items()], ["step", "seconds"]))
    print(f"\nestimated epoch ({n_train_batches} training batches + validation): before {epoch_before:.1f} s, "
          f"now {epoch_now:.1f} s, ratio {epoch_before / epoch_now:.2f}x (shared cores: the ratio is the number)")
    report["validation"] = {"times_s": vtimes, "train_batches": n_train_batches, "epoch_before_s": epoch_before,
                            "epoch_now_s": epoch_now, "ratio": epoch_before / epoch_now}


def trace(cost: torch.Tensor, reg: float, iterations: int) -> list[dict[str, float]]:
    """Per iteration: the rule's L1 row violation, POT's L2 column violation and the cost ``<plan, M>``."""
    from uad_plugins.plugins.pradot.torch_model import LOG_FLOOR, sinkhorn_log

    n, k = cost.shape
    scaled = cost / -reg
    rows: list[dict[str, float]] = []
    state: dict[str, torch.Tensor] = {"u": torch.zeros(n)}

    def monitor(iteration: int, u: torch.Tensor, v: torch.Tensor) -> None:
        l1 = float((state["u"] - u).exp().sub(1.0).abs().mean())
        state["u"] = u.clone()
        plan = (scaled + u[:, None] + v[None, :]).clamp_(min=LOG_FLOOR).exp_()
        rows.append({"iteration": iteration + 1, "l1_rows": l1,
                     "l2_columns": float(torch.linalg.vector_norm(plan.sum(dim=0) - 1.0 / k)),
                     "l1_columns": float((plan.sum(dim=0) - 1.0 / k).abs().sum()),
                     "cost": float((plan * cost).sum())})

    sinkhorn_log(cost, reg, iterations, monitor=monitor)
    return rows


def section_convergence(ctx: Context, report: dict[str, Any]) -> None:
    """Marginal violation and transport cost vs iteration, on training batches and validation normals."""
    args = ctx.args
    limit = args.trace_iterations
    points = [p for p in TRACE_POINTS if p <= limit]
    out: dict[str, Any] = {}
    states = {"initial": "initial prototypes", "trained": f"after {args.epochs} epoch(s) of 100 it"}
    for state in [states[name] for name in args.states]:
        if state.startswith("after"):
            ctx.train_epochs(args.epochs, 100, 0.0)
        else:
            ctx.bank.prototypes.copy_(ctx.initial)
        groups = {"train": ctx.train_batches(1)[:args.trace_batches],
                  "val normals": ctx.val_normal_batches()[:args.trace_batches]}
        for group, feature_batches in groups.items():
            traces = [trace(ctx.cost(f), args.reg, limit) for f in feature_batches]
            rows = []
            for p in points:
                at = [t[p - 1] for t in traces]
                rel = [abs(a["cost"] - t[-1]["cost"]) / t[-1]["cost"] for a, t in zip(at, traces, strict=True)]
                rows.append([p, max(a["l1_rows"] for a in at), max(a["l1_columns"] for a in at),
                             max(a["l2_columns"] for a in at), max(rel)])
            stops = []
            for tol in args.tolerances:
                first = [next((r["iteration"] for r in t if r["l1_rows"] <= tol), math.inf) for t in traces]
                at_stop = [abs(t[int(min(s, limit)) - 1]["cost"] - t[-1]["cost"]) / t[-1]["cost"]
                           for s, t in zip(first, traces, strict=True)]
                stops.append([tol, min(first), max(first), max(at_stop)])  # inf: not reached by the last
            key = f"{state}, {group}"
            print(f"\n## Convergence: {key} ({len(traces)} batches; worst batch shown)")
            print(table(rows, ["iteration", "L1 rows (rule)", "L1 columns", "L2 columns (POT)",
                               f"|cost - cost@{limit}| / cost"]))
            print(table(stops, ["tolerance", "stops at (min)", "(max)", "cost rel. error there"]))
            out[key] = {"traces": traces, "stops": stops}
    report["convergence"] = out


def plan_difference(plan: torch.Tensor, reference: torch.Tensor, cost: torch.Tensor) -> dict[str, float]:
    """How far ``plan`` is from ``reference``: the largest entry difference relative to the largest entry, the
    largest relative difference of the entries above 1e-12 of the largest, and the relative difference of
    ``<plan, M>``."""
    top = float(reference.abs().max())
    big = reference.abs() > 1e-12 * top
    ref_cost = float((reference.double() * cost.double()).sum())
    return {"max_abs_over_max": float((plan - reference).abs().max()) / top,
            "max_rel_entries": float(((plan - reference).abs()[big] / reference.abs()[big]).max()),
            "cost_rel": abs(float((plan.double() * cost.double()).sum()) - ref_cost) / ref_cost}


def section_solver(ctx: Context, report: dict[str, Any]) -> None:
    """The package's solver (stabilised scaling form) against the log-domain loop before it, and against POT's
    ``sinkhorn_log`` (float32 and float64, when POT is installed), on real costs at the initial prototypes and after
    ``--epochs`` epochs of training: interleaved medians of ``--repeats`` and plan differences."""
    from uad_plugins.plugins.pradot.torch_model import sinkhorn_log

    args = ctx.args
    try:
        import ot
    except ImportError:  # pragma: no cover - POT is a test dependency
        ot = None
    out: dict[str, Any] = {}
    rows = []
    for state in args.states:
        if state == "trained":
            ctx.train_epochs(args.epochs, 100, 0.0)
        else:
            ctx.bank.prototypes.copy_(ctx.initial)
        for index, features in enumerate(ctx.train_batches(args.epochs if state == "trained" else 0)
                                         [:args.trace_batches]):
            cost = ctx.cost(features)
            new, old = sinkhorn_log(cost, args.reg, 100), log_domain_sinkhorn(cost, args.reg, 100)
            times = median_times({"log": lambda c=cost: log_domain_sinkhorn(c, args.reg, 100),
                                  "new": lambda c=cost: sinkhorn_log(c, args.reg, 100)}, args.repeats)
            entry: dict[str, Any] = {"times_s": times, "iterations": [old.iterations, new.iterations],
                                     "absorptions": new.absorptions,
                                     "new_vs_log": plan_difference(new.plan, old.plan, cost)}
            if ot is not None and index == 0:
                for dtype in (torch.float32, torch.float64):
                    c = cost.to(dtype)
                    a = torch.full((c.shape[0],), 1 / c.shape[0], dtype=dtype)
                    b = torch.full((c.shape[1],), 1 / c.shape[1], dtype=dtype)
                    want = ot.bregman.sinkhorn(a, b, c, args.reg, method="sinkhorn_log", numItermax=100,
                                               warn=False).float()
                    name = "pot32" if dtype == torch.float32 else "pot64"
                    entry[f"new_vs_{name}"] = plan_difference(new.plan, want, cost)
                    entry[f"log_vs_{name}"] = plan_difference(old.plan, want, cost)
            out[f"{state} {index}"] = entry
            diff = entry["new_vs_log"]
            rows.append([state, index, times["log"], times["new"], times["log"] / times["new"], new.absorptions,
                         diff["max_abs_over_max"], diff["max_rel_entries"], diff["cost_rel"],
                         entry.get("new_vs_pot64", {}).get("max_rel_entries", math.nan),
                         entry.get("log_vs_pot64", {}).get("max_rel_entries", math.nan),
                         entry.get("new_vs_pot32", {}).get("max_rel_entries", math.nan)])
            print(f"  {state} batch {index}: {entry}", flush=True)
    print(f"\n## Sinkhorn, 100 iterations, log-domain loop (old) vs stabilised scaling form (new): median of "
          f"{args.repeats}, interleaved, shared cores: read the ratios. Plan differences: max |new - ref| / max ref, "
          f"max relative difference of the entries above 1e-12 of the largest, |<plan, M>| relative")
    print(table(rows, ["prototypes", "batch", "old s", "new s", "old / new", "absorptions", "|d| / max", "max rel",
                       "cost rel", "rel vs POT f64", "old: rel vs POT f64", "rel vs POT f32"]))
    report["solver"] = out


def train_lockstep(ctx: Context, settings: list[tuple[str, int, float]]) -> dict[str, Any]:
    """``--epochs`` epochs of prototype updates from the same initial prototypes and batch order, every setting
    with its own prototypes, run batch by batch in turn (interleaved, so load changes hit all settings alike), then
    the held-out selection of every setting (transport loss of the validation normals) the same way, batch by batch.

    Times per setting: the Sinkhorn, the whole training step without the backbone (cost matrix, Sinkhorn, update)
    and the selection. Shared by all settings and timed in the same loops: the backbone of each training batch
    (``net.features`` of its images) and the validation prediction pass (``net(images)`` on the validation set,
    one chunk after each selection batch)."""
    args, bank = ctx.args, ctx.bank
    states = [ctx.initial.clone() for _ in settings]
    stats = [{"sinkhorn_s": 0.0, "step_s": 0.0, "selection_s": 0.0, "iterations": 0, "absorptions": 0,
              "batches": 0, "val_loss": 0.0} for _ in settings]
    shared = {"backbone_s": 0.0, "prediction_s": 0.0}
    for epoch in range(args.epochs):
        for idx in ctx.train_indices(epoch):
            start = time.perf_counter()
            ctx.net.features(ctx.train_images[idx])
            shared["backbone_s"] += time.perf_counter() - start
            features = ctx.train_features[idx]
            for state, stat, (solver, num_iterations, tolerance) in zip(states, stats, settings, strict=True):
                start = time.perf_counter()
                cost = ctx.cost_for(features, state)
                solve_start = time.perf_counter()
                result = solver_function(solver)(cost, args.reg, num_iterations, tolerance)
                solve_end = time.perf_counter()
                flat = features.float().reshape(-1, features.shape[-1])
                mass = result.plan.sum(dim=0)
                means = (result.plan.T @ flat) / mass.clamp_min(1e-12)[:, None]
                means = torch.where(mass[:, None] > 0, means, state)
                state.copy_(args.ema * state + (1.0 - args.ema) * means)
                stat["sinkhorn_s"] += solve_end - solve_start
                stat["step_s"] += time.perf_counter() - start
                stat["iterations"] += result.iterations
                stat["absorptions"] += getattr(result, "absorptions", 0)
                stat["batches"] += 1
    val_chunks = list(ctx.val_images.split(args.batch_size))
    for index, features in enumerate(ctx.val_normal_batches()):
        for state, stat, (solver, num_iterations, tolerance) in zip(states, stats, settings, strict=True):
            start = time.perf_counter()
            cost = ctx.cost_for(features, state)
            plan = solver_function(solver)(cost, args.reg, num_iterations, tolerance).plan
            stat["val_loss"] += float((plan * cost).sum()) * len(features)
            stat["selection_s"] += time.perf_counter() - start
        for chunk in val_chunks[2 * index:2 * index + 2]:
            start = time.perf_counter()
            ctx.net(chunk)
            shared["prediction_s"] += time.perf_counter() - start
    for chunk in val_chunks[2 * len(ctx.val_normal_batches()):]:
        start = time.perf_counter()
        ctx.net(chunk)
        shared["prediction_s"] += time.perf_counter() - start
    bank.prototypes.copy_(ctx.initial)
    for stat, state in zip(stats, states, strict=True):
        stat["val_loss"] /= len(ctx.val_normals)
        stat["prototypes"] = state
    return {"settings": stats, "shared": shared}


def section_epoch(ctx: Context, report: dict[str, Any]) -> None:
    """Training with each setting from the same start, interleaved batch by batch: time per epoch, iterations,
    prototypes and validation quality."""
    args = ctx.args
    settings = [parse_setting(text) for text in args.settings]
    run = train_lockstep(ctx, settings)
    trained, shared = run["settings"], run["shared"]
    reference = trained[0]["prototypes"]
    moved = float(torch.linalg.vector_norm(reference - ctx.initial))
    full = len(batches(len(ctx.train_images), args.batch_size, args.seed))  # one epoch
    count = trained[0]["batches"]
    scale = full / count  # the timed training batches stand for one whole epoch (their mean times full)
    results = []
    first_val_plan: torch.Tensor | None = None
    val_cost: torch.Tensor | None = None
    for text, (solver, num_iterations, tolerance), stat in zip(args.settings, settings, trained, strict=True):
        prototypes = stat.pop("prototypes")
        ctx.bank.prototypes.copy_(prototypes)
        gap = float(torch.linalg.vector_norm(prototypes - reference)) / moved
        cosine = float(torch.nn.functional.cosine_similarity(prototypes, reference, dim=1).min())
        if val_cost is None:
            val_cost = ctx.cost(ctx.val_normal_batches()[0])  # the first setting's prototypes: the same cost for all
        val_plan = solver_function(solver)(val_cost, args.reg, num_iterations, tolerance).plan
        if first_val_plan is None:
            first_val_plan = val_plan
        no_backbone = scale * stat["step_s"] + stat["selection_s"]
        row = {"setting": text, "sinkhorn_s_per_batch": stat["sinkhorn_s"] / count,
               "step_s_per_batch": stat["step_s"] / count, "iterations_per_batch": stat["iterations"] / count,
               "absorptions_per_batch": stat["absorptions"] / count, "train_batches": count,
               "prototype_gap": gap, "min_cosine_to_first": cosine, "val_loss_own": stat["val_loss"],
               "val_loss_100": ctx.val_transport_loss(100, 0.0), "val_image_auroc": ctx.val_auroc(),
               "val_plan_vs_first": plan_difference(val_plan, first_val_plan, val_cost),
               "selection_s": stat["selection_s"], "epoch_s_no_backbone": no_backbone,
               "epoch_s": no_backbone + scale * shared["backbone_s"] + shared["prediction_s"]}
        results.append(row)
        print(f"  {text}: {row}", flush=True)
    base, base_nb = results[0]["epoch_s"], results[0]["epoch_s_no_backbone"]
    print(f"\n## {args.epochs} epoch(s) of updates per setting ({count} training batches timed, standing for {full}), "
          f"same start and batch order, interleaved batch by batch (prototype gap: |P - P_first| / |P_first - P_init|;"
          f" val plan: one validation batch's cost, plan with each setting's solver vs the first setting's). Epoch = "
          f"{full} training steps + held-out selection ({len(ctx.val_normals)} normals) [+ backbone "
          f"{shared['backbone_s'] / count:.3g} s per training batch + validation prediction pass "
          f"{shared['prediction_s']:.3g} s, timed in the same loops]; shared cores: read the ratios")
    print(table([[r["setting"], r["sinkhorn_s_per_batch"], r["step_s_per_batch"], r["iterations_per_batch"],
                  r["absorptions_per_batch"], r["prototype_gap"], r["min_cosine_to_first"], r["val_loss_own"],
                  r["val_loss_100"], r["val_plan_vs_first"]["max_abs_over_max"], r["val_image_auroc"],
                  r["selection_s"], r["epoch_s_no_backbone"], base_nb / r["epoch_s_no_backbone"], r["epoch_s"],
                  base / r["epoch_s"]] for r in results],
                ["setting", "sinkhorn s/batch", "step s/batch", "iterations", "absorptions", "prototype gap",
                 "min cos", "val loss (own)", "val loss (100 it)", "val plan |d|/max", "val AUROC", "selection s",
                 "epoch s w/o backbone", "ratio", "epoch s", "ratio"]))
    report["epoch"] = results
    report["epoch_shared_s"] = {**shared, "train_batches_timed": count, "train_batches_epoch": full}


SECTIONS = {"profile": section_profile, "convergence": section_convergence, "solver": section_solver,
            "epoch": section_epoch}


def main(argv: list[str] | None = None) -> None:
    """Parse, build the shared context, run the sections."""
    from uad_plugins.plugins.pradot.model import Pradot

    default_tolerance = inspect.signature(Pradot.__init__).parameters["tolerance"].default
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["bsdata", "bottle"], default="bsdata")
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--layer", default="blocks.4")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-prototypes", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--reg", type=float, default=0.01)
    parser.add_argument("--ema", type=float, default=0.95)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=default_tolerance or 1e-3,
                        help="the tolerance the profile section times (default: the model's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trace-batches", type=int, default=3)
    parser.add_argument("--trace-iterations", type=int, default=200)
    parser.add_argument("--states", nargs="+", choices=["initial", "trained"], default=["initial", "trained"],
                        help="prototype states the convergence section traces")
    parser.add_argument("--tolerances", type=float, nargs="+", default=list(DEFAULT_TOLERANCE_LIST))
    parser.add_argument("--settings", nargs="+", default=["100", "50", "30", "20", "10", "tol:1e-3"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-batches", type=int, default=0,
                        help="use only the first N training batches of each epoch (0: all)")
    parser.add_argument("--retime", action="store_true",
                        help="retrain a setting already trained by an earlier section instead of reusing it")
    parser.add_argument("--output", help="also write every number as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="pradot_profile_") as tmp, torch.no_grad():
        ctx = Context(args, Path(tmp))
        for name in args.sections:
            SECTIONS[name](ctx, report)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
