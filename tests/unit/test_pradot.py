"""PRADOT plugin: costs, optimal-transport updates, scoring, variants, model selection, checkpoints and export."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch

from uad_plugins.errors import ConfigError, WeightsError
from uad_plugins.plugins.pradot import torch_model
from uad_plugins.plugins.pradot.model import Pradot
from uad_plugins.plugins.pradot.torch_model import (
    PradotModel,
    PradotTrainOutput,
    PrototypeBank,
    SinkhornResult,
    grid_coordinates,
    sinkhorn_log,
    sinkhorn_plan,
    spatial_cost,
    variant_alphas,
)

TINY = {"backbone": "resnet18", "layers": ["layer3"], "pretrained": False, "image_size": 64, "num_prototypes": 2,
        "num_iterations": 20}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def tiny_net(**overrides: object) -> PradotModel:
    torch.manual_seed(0)
    return PradotModel(**{**TINY, **overrides})


def textures(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth, similar 'normal' images in [0, 1]: a fixed pattern plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 8 * torch.pi, size)
    base = (0.5 + 0.25 * torch.sin(x)[None, :] * torch.cos(x)[:, None]).expand(3, size, size)
    return (base + 0.03 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)


def small_bank(alpha: float, seed: int = 0) -> PrototypeBank:
    torch.manual_seed(seed)
    return PrototypeBank(channels=5, grid=(2, 3), num_prototypes=2, alpha=alpha)


# ---------------------------------------------------------------------------------------------- costs
def test_grid_coordinates_and_spatial_cost() -> None:
    coords = grid_coordinates(3, 4)
    assert coords.shape == (12, 2)
    torch.testing.assert_close(coords[0], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(coords[5], torch.tensor([0.5, 1 / 3]))  # row 1, column 1 (row-major)
    cost = spatial_cost(3, 4)
    assert cost.shape == (12, 12)
    torch.testing.assert_close(cost, cost.T)
    assert float(cost.diagonal().abs().max()) == 0.0
    assert float(cost.max()) == pytest.approx(1.0)  # divided by the corner-to-corner distance sqrt(2)
    assert float(cost[0, 11]) == pytest.approx(1.0) and float(cost[0, 3]) == pytest.approx(1 / math.sqrt(2))


@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("scale", ["batch", "image", "none"])
def test_fused_cost_matches_the_definition(alpha: float, scale: str) -> None:
    bank = small_bank(alpha)
    features = torch.randn(2, 6, 5)
    got = bank.fused_cost(features, bank.prototypes, scale)
    assert got.shape == (2, 6, 2, 6)
    coords = grid_coordinates(2, 3)
    expected = torch.zeros(2, 6, 12)
    for b in range(2):
        for n in range(6):
            for m in range(12):
                expected[b, n, m] = 1 - F.cosine_similarity(features[b, n], bank.prototypes[m], dim=0)
    if scale == "batch":
        expected = expected / expected.max()
    elif scale == "image":
        expected = expected / expected.amax(dim=(1, 2), keepdim=True)
    for n in range(6):
        for m in range(12):  # prototype m sits at grid position m % 6
            spatial = torch.dist(coords[n], coords[m % 6]) / math.sqrt(2)
            expected[:, n, m] = (1 - alpha) * expected[:, n, m] + alpha * spatial
    torch.testing.assert_close(got.reshape(2, 6, 12), expected)


def test_nearest_cost_is_the_minimum_over_prototypes_with_per_image_normalisation() -> None:
    bank = small_bank(0.3)
    bank.selected_prototypes.copy_(torch.randn_like(bank.prototypes))
    features = torch.randn(3, 6, 5)
    got = bank.nearest_cost(features)
    full = bank.fused_cost(features, bank.selected_prototypes, "image").reshape(3, 6, 12)
    torch.testing.assert_close(got, full.min(dim=2).values)
    # per image: an image's map does not depend on the other images of the batch
    torch.testing.assert_close(bank.nearest_cost(features[1:2]), got[1:2])
    unnormalised = bank.nearest_cost(features, normalize_per_image=False)
    torch.testing.assert_close(unnormalised, bank.fused_cost(features, bank.selected_prototypes, "none")
                               .reshape(3, 6, 12).min(dim=2).values)


# ---------------------------------------------------------------------------------------------- transport
def test_sinkhorn_plan_has_uniform_marginals_and_beats_the_independent_coupling() -> None:
    torch.manual_seed(0)
    cost = torch.rand(24, 12)
    plan = sinkhorn_plan(cost, reg=0.01, num_iterations=100)
    assert plan.shape == (24, 12) and plan.dtype == torch.float32
    # the solver's last step rescales rows: their marginal is exact, the columns' only close after 100 iterations
    torch.testing.assert_close(plan.sum(dim=1), torch.full((24,), 1 / 24), atol=1e-6, rtol=0)
    torch.testing.assert_close(plan.sum(dim=0), torch.full((12,), 1 / 12), atol=0, rtol=0.02)
    independent = torch.full((24, 12), 1 / (24 * 12))
    assert float((plan * cost).sum()) < 0.5 * float((independent * cost).sum())


@pytest.mark.parametrize(("shape", "reg", "iterations"), [((24, 12), 0.01, 100), ((96, 160), 0.01, 37),
                                                        ((40, 30), 1.0, 100)])  # the last one stops early
def test_sinkhorn_plan_is_pots_log_domain_sinkhorn(shape: tuple[int, int], reg: float, iterations: int) -> None:
    """Our in-place solver (one work buffer instead of fresh N x K temporaries per iteration, issue 12) computes
    what the official code's POT call computes."""
    ot = pytest.importorskip("ot")

    cost = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[0]))
    a, b = torch.full((shape[0],), 1 / shape[0]), torch.full((shape[1],), 1 / shape[1])
    want = ot.bregman.sinkhorn(a, b, cost, reg, method="sinkhorn_log", numItermax=iterations, warn=False)
    torch.testing.assert_close(sinkhorn_plan(cost, reg, iterations), want, rtol=1e-5, atol=1e-9)


def pot_plan(cost: torch.Tensor, reg: float, iterations: int) -> torch.Tensor:
    """POT's log-domain Sinkhorn with uniform marginals, as the official code calls it."""
    ot = pytest.importorskip("ot")
    a = torch.full((cost.shape[0],), 1 / cost.shape[0], dtype=cost.dtype)
    b = torch.full((cost.shape[1],), 1 / cost.shape[1], dtype=cost.dtype)
    return ot.bregman.sinkhorn(a, b, cost, reg, method="sinkhorn_log", numItermax=iterations, warn=False)


def pradot_like_cost(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """A cost shaped like PRADOT's: cosine cost of clustered features to prototypes, divided by its maximum, so
    that with reg 0.01 most plan entries lie far below float32's range (exp's slow path without the clamp)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=gen)
    features = centres[torch.randint(0, 4, (n,), generator=gen)] + 0.3 * torch.randn(n, 16, generator=gen)
    prototypes = centres[torch.randint(0, 4, (k,), generator=gen)] + 0.5 * torch.randn(k, 16, generator=gen)
    cost = 1 - F.normalize(features, dim=1) @ F.normalize(prototypes, dim=1).T
    return cost / cost.max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sinkhorn_log_at_pots_rule_is_pots_plan_on_a_pradot_like_cost(dtype: torch.dtype) -> None:
    """The exp clamp (LOG_FLOOR) changes nothing visible: 100 iterations, POT's rule, equal to POT's plan."""
    cost = pradot_like_cost(64, 96).to(dtype)
    result = sinkhorn_log(cost, 0.01, 100)
    assert isinstance(result, SinkhornResult) and result.iterations == 100  # stopThr 1e-9: never reached
    assert float((cost / -0.01).min()) < -88  # entries whose exp underflows float32 are there
    torch.testing.assert_close(result.plan, pot_plan(cost, 0.01, 100), rtol=1e-5, atol=1e-9)
    assert result.plan.dtype == dtype


def test_tolerance_stops_early_on_an_easy_problem_with_pots_plan_at_that_count() -> None:
    cost = torch.rand(40, 30, generator=torch.Generator().manual_seed(1))
    result = sinkhorn_log(cost, reg=0.5, num_iterations=100, tolerance=1e-4)
    assert 1 < result.iterations < 20 and result.violation <= 1e-4
    torch.testing.assert_close(result.plan, pot_plan(cost, 0.5, result.iterations), rtol=1e-5, atol=1e-9)
    # the rule read the row masses of the dual pair the last u update started from: check it by hand
    duals: list[tuple[torch.Tensor, torch.Tensor]] = []
    sinkhorn_log(cost, 0.5, result.iterations, monitor=lambda i, u, v: duals.append((u.clone(), v.clone())))
    u_before, v_last = duals[-2][0], duals[-1][1]
    rows = torch.exp(cost / -0.5 + u_before[:, None] + v_last[None, :]).sum(dim=1)
    assert result.violation == pytest.approx(float((rows - 1 / 40).abs().sum()), rel=1e-2)  # float32 cancellation


def test_tolerance_reaches_the_cap_on_a_hard_problem() -> None:
    cost = pradot_like_cost(64, 96)
    result = sinkhorn_log(cost, reg=0.01, num_iterations=30, tolerance=1e-7)
    assert result.iterations == 30 and result.violation > 1e-7
    torch.testing.assert_close(result.plan, pot_plan(cost, 0.01, 30), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("tolerance", [1e-2, 1e-3])
def test_tolerance_stops_early_at_reg_0_01_with_pots_plan_at_that_count(tolerance: float) -> None:
    cost = torch.rand(96, 160, generator=torch.Generator().manual_seed(2))  # converges in 8 / 15 iterations
    result = sinkhorn_log(cost, 0.01, 100, tolerance=tolerance)
    assert result.iterations < 100 and result.violation <= tolerance
    torch.testing.assert_close(result.plan, pot_plan(cost, 0.01, result.iterations), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(sinkhorn_plan(cost, 0.01, 100, tolerance=tolerance), result.plan)
    # the row marginal is exact (u was updated last); the columns are within the tolerance's order
    torch.testing.assert_close(result.plan.sum(dim=1), torch.full((96,), 1 / 96), atol=1e-6, rtol=0)
    assert float((result.plan.sum(dim=0) - 1 / 160).abs().sum()) < 10 * tolerance


@pytest.mark.parametrize("cost", [torch.rand(96, 160, generator=torch.Generator().manual_seed(2)),
                                  pradot_like_cost(64, 96, seed=3)], ids=["uniform", "clustered"])
def test_a_looser_tolerance_never_runs_more_iterations(cost: torch.Tensor) -> None:
    counts = [sinkhorn_log(cost, 0.01, 300, tolerance=t).iterations for t in (1e-1, 1e-2, 1e-3, 1e-4)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


# ---------------------------------------------------------------------------------------------- stabilised scaling form
def far_prototype_cost(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """PRADOT-like cost with three prototypes (columns) and two features (rows) far from everything: with reg 0.01,
    ``exp(-cost / reg)`` underflows float32's normal range (denormal or 0) on those whole columns and rows."""
    cost = pradot_like_cost(n, k, seed).clone()
    gen = torch.Generator().manual_seed(seed + 100)
    cost[:, :3] = 0.92 + 0.08 * torch.rand(n, 3, generator=gen)
    cost[:2, :] = 0.92 + 0.08 * torch.rand(2, k, generator=gen)
    return cost


def assert_pots_iterates(plan: torch.Tensor, cost: torch.Tensor, reg: float, iterations: int) -> None:
    """``plan`` is POT's float32 ``sinkhorn_log`` plan after ``iterations`` iterations to float32 tolerance, and no
    further from POT's float64 plan than POT's own float32 plan is (within a factor 2)."""
    assert bool(torch.isfinite(plan).all())
    want32 = pot_plan(cost, reg, iterations)
    want64 = pot_plan(cost.double(), reg, iterations).float()
    big = want64 > 1e-12 * want64.max()
    ours = float(((plan - want64).abs()[big] / want64[big]).max())
    pots = float(((want32 - want64).abs()[big] / want64[big]).max())
    assert ours <= max(2 * pots, 1e-5), (ours, pots)
    torch.testing.assert_close(plan, want32, rtol=4 * max(pots, 1e-5), atol=1e-9)


COSTS = {
    "uniform": (lambda: torch.rand(96, 160, generator=torch.Generator().manual_seed(5)), 0.01),
    "pradot, underflowing columns": (lambda: far_prototype_cost(64, 96), 0.01),
    "pradot, reg 0.001": (lambda: far_prototype_cost(64, 96, seed=1), 0.001),
}


@pytest.mark.parametrize("iterations", [1, 10, 100])
@pytest.mark.parametrize("case", list(COSTS))
def test_scaling_form_runs_pots_log_domain_iterates(case: str, iterations: int) -> None:
    """The stabilised scaling form (issue 15) computes POT's ``sinkhorn_log`` iterates: same plan after 1, 10 and
    100 iterations, on uniform costs, on PRADOT-like costs whose kernel ``exp(-cost / reg)`` underflows on whole
    columns and rows, and at reg 0.001 (whose scalings outgrow the threshold: absorbed)."""
    make, reg = COSTS[case]
    cost = make()
    if case != "uniform":
        underflowed = torch.exp(cost / -reg) < torch.finfo(torch.float32).tiny
        assert bool(underflowed.all(dim=0).any()) and bool(underflowed.all(dim=1).any())
    result = sinkhorn_log(cost, reg, iterations)
    assert result.iterations == iterations
    assert_pots_iterates(result.plan, cost, reg, iterations)
    torch.testing.assert_close(result.plan.sum(dim=1), torch.full((cost.shape[0],), 1 / cost.shape[0]),
                               atol=1e-6, rtol=1e-4)
    if case == "pradot, reg 0.001" and iterations == 100:
        assert result.absorptions >= 2


@pytest.mark.parametrize("iterations", [10, 100])
def test_absorbing_often_changes_nothing(monkeypatch: pytest.MonkeyPatch, iterations: int) -> None:
    """With a low absorption threshold the scalings are absorbed many times (each one rebuilds the kernel); the
    iterates are still POT's."""
    cost = pradot_like_cost(64, 96, seed=2)
    monkeypatch.setattr(torch_model, "ABSORB_THRESHOLD", 0.5)
    result = sinkhorn_log(cost, 0.01, iterations)
    assert result.absorptions >= (5 if iterations == 10 else 20)
    assert_pots_iterates(result.plan, cost, 0.01, iterations)


@pytest.mark.parametrize("guard", [1 / 96, math.inf])
def test_lost_kernel_sums_are_computed_in_the_log_domain(monkeypatch: pytest.MonkeyPatch, guard: float) -> None:
    """A kernel row or column sum below the guard (terms lost to float32 underflow) is computed again in the log
    domain and absorbed: no inf or nan, and still POT's iterates. Raising the guard makes some (1/96) or all (inf)
    rows and columns take that path."""
    calls = {"rows": 0, "columns": 0}
    rows, columns = torch_model._log_rows, torch_model._log_columns

    def counted_rows(*args: object) -> torch.Tensor:
        calls["rows"] += 1
        return rows(*args)

    def counted_columns(*args: object) -> torch.Tensor:
        calls["columns"] += 1
        return columns(*args)

    monkeypatch.setattr(torch_model, "_SUM_GUARD", guard)
    monkeypatch.setattr(torch_model, "_log_rows", counted_rows)
    monkeypatch.setattr(torch_model, "_log_columns", counted_columns)
    cost = far_prototype_cost(64, 96)
    result = sinkhorn_log(cost, 0.01, 30)
    assert calls["columns"] > 0 and (calls["rows"] > 0 or guard < math.inf)
    assert result.iterations == 30 and result.absorptions >= calls["columns"]
    assert_pots_iterates(result.plan, cost, 0.01, 30)
    tolerant = sinkhorn_log(cost, 0.01, 30, tolerance=1e-9)  # the tolerance rule across rescued rows
    assert math.isfinite(tolerant.violation) and tolerant.iterations == 30


def reference_log_domain(cost: torch.Tensor, reg: float, num_iterations: int, tolerance: float,
                         stop_threshold: float = 1e-9) -> int:
    """Iterations the log-domain loop (float64, torch.logsumexp) runs under our rules (see ``sinkhorn_log``)."""
    scaled = cost.double() / -reg
    n, k = cost.shape
    u = torch.zeros(n, dtype=torch.float64)
    for iteration in range(num_iterations):
        v = -math.log(k) - torch.logsumexp(scaled + u[:, None], 0)
        previous, u = u, -math.log(n) - torch.logsumexp(scaled + v[None, :], 1)
        if tolerance > 0:
            if float((previous - u).exp().sub(1).abs().mean()) <= tolerance:
                return iteration + 1
        elif iteration % 10 == 0:
            columns = torch.exp(scaled + u[:, None] + v[None, :]).sum(0)
            if float(torch.linalg.vector_norm(columns - 1 / k)) < stop_threshold:
                return iteration + 1
    return num_iterations


@pytest.mark.parametrize(("tolerance", "stop_threshold"), [(0.0, 1e-6), (0.0, 1e-5), (0.0, 1e-4), (3e-2, 1e-9),
                                                           (1e-2, 1e-9), (1e-3, 1e-9)])
def test_iteration_counts_are_the_log_domain_loops(tolerance: float, stop_threshold: float) -> None:
    """Both stopping rules stop at the iteration the log-domain loop stops at (POT's rule: checked at iterations
    1, 11, 21, ... on the column marginal; the tolerance rule: every iteration on the row marginal)."""
    cost = torch.rand(96, 160, generator=torch.Generator().manual_seed(2))
    result = sinkhorn_log(cost, 0.01, 100, tolerance=tolerance, stop_threshold=stop_threshold)
    assert result.iterations == reference_log_domain(cost, 0.01, 100, tolerance, stop_threshold)
    assert result.iterations < 100
    if tolerance == 0:
        ot = pytest.importorskip("ot")
        a, b = torch.full((96,), 1 / 96), torch.full((160,), 1 / 160)
        _, log = ot.bregman.sinkhorn(a, b, cost, 0.01, method="sinkhorn_log", numItermax=100,
                                     stopThr=stop_threshold, log=True, warn=False)
        assert result.iterations == min(int(log["niter"]) + 1, 100)
        assert_pots_iterates(result.plan, cost, 0.01, result.iterations)


def test_training_update_reports_the_iterations_the_tolerance_allowed() -> None:
    loose = tiny_net(num_iterations=50, tolerance=0.5).train()(textures(4))
    assert loose.iterations.shape == (1,) and 1 <= float(loose.iterations[0]) < 50
    pots_rule = tiny_net(num_iterations=50).train()(textures(4))
    assert float(pots_rule.iterations[0]) == 50


@pytest.mark.parametrize("ema", [0.0, 0.95])
def test_update_moves_prototypes_to_the_transported_feature_means(ema: float) -> None:
    bank = small_bank(0.3)
    features = torch.randn(4, 6, 5)
    before = bank.prototypes.clone()
    plan, cost = bank.transport(features, reg=0.05, num_iterations=50)
    flat = features.reshape(-1, 5)
    means = (plan.T @ flat) / plan.sum(dim=0)[:, None]
    loss = bank.update(features, reg=0.05, num_iterations=50, ema=ema)
    torch.testing.assert_close(bank.prototypes, ema * before + (1 - ema) * means)
    torch.testing.assert_close(loss, (plan * cost).sum())
    torch.testing.assert_close(bank.selected_prototypes, before)  # inference prototypes move only on select()


def test_training_reduces_transport_cost_and_detects_a_defect() -> None:
    net = tiny_net(num_iterations=30, ema=0.5).train()  # a fast EMA: converges in a few steps
    images = textures(8)
    losses = []
    for step in range(8):
        out = net(images[(step % 2) * 4:(step % 2) * 4 + 4])
        assert isinstance(out, PradotTrainOutput)
        losses.append(float(out.loss))
    assert losses[-1] < 0.5 * losses[0]
    net.select_current()
    net.eval()
    normals = textures(4, seed=5)
    defects = normals.clone()
    defects[:, :, 20:40, 24:44] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    with torch.no_grad():
        normal_out, defect_out = net(normals), net(defects)
    assert float(defect_out.pred_score.min()) > float(normal_out.pred_score.max())
    inside = defect_out.anomaly_map[:, 0, 20:40, 24:44].mean()
    outside = defect_out.anomaly_map[:, 0, :, :12].mean()
    assert float(inside) > float(outside)
    assert not any(p.requires_grad for p in net.parameters())


# ---------------------------------------------------------------------------------------------- variants
def test_variant_alphas() -> None:
    assert variant_alphas("local", 0.3) == (0.3,)
    assert variant_alphas("global", 0.3) == (0.0,)
    assert variant_alphas("ensemble", 0.3) == (0.0, 0.3)
    with pytest.raises(ConfigError, match="variant"):
        variant_alphas("mixed", 0.3)


def test_global_prototypes_ignore_position_local_ones_do_not() -> None:
    features = torch.randn(1, 6, 5)
    order = torch.tensor([5, 3, 4, 0, 2, 1])
    global_bank, local_bank = small_bank(0.0), small_bank(0.9)
    for bank in (global_bank, local_bank):
        bank.selected_prototypes.copy_(torch.randn_like(bank.prototypes))
    moved = global_bank.nearest_cost(features[:, order])
    torch.testing.assert_close(moved, global_bank.nearest_cost(features)[:, order])
    assert not torch.allclose(local_bank.nearest_cost(features[:, order]), local_bank.nearest_cost(features)[:, order])


def test_ensemble_averages_a_global_and_a_local_bank_per_layer() -> None:
    net = tiny_net(layers=["layer2", "layer3"], variant="ensemble", alpha=0.3)
    assert [bank.alpha for bank in net.banks] == [0.0, 0.3, 0.0, 0.3]
    assert net.bank_layers == [0, 0, 1, 1]
    assert [bank.grid for bank in net.banks] == [(8, 8), (8, 8), (4, 4), (4, 4)]  # strides 8 and 16 at 64 px
    assert [tuple(bank.prototypes.shape) for bank in net.banks] == [(128, 128), (128, 128), (32, 256), (32, 256)]
    for bank in net.banks:
        bank.selected_prototypes.copy_(torch.randn_like(bank.prototypes))
    net.eval()
    images = textures(2)
    with torch.no_grad():
        out = net(images)
        feats = net.features(images)
        maps = [F.interpolate(bank.nearest_cost(feats[layer]).reshape(2, 1, *bank.grid), size=(64, 64),
                              mode="bilinear", align_corners=True) for bank, layer in zip(net.banks, net.bank_layers)]
    torch.testing.assert_close(out.anomaly_map, torch.stack(maps).mean(dim=0))
    torch.testing.assert_close(out.pred_score, out.anomaly_map.amax(dim=(1, 2, 3)))


# ---------------------------------------------------------------------------------------------- inference
def test_eval_forward_shapes_and_never_transports(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the eval forward must not call the Sinkhorn solver")

    net = tiny_net().eval()
    monkeypatch.setattr("uad_plugins.plugins.pradot.torch_model.sinkhorn_log", forbidden)
    images = textures(3)
    with torch.no_grad():
        out = net(images)
    assert isinstance(out, InferenceBatch)
    assert out.pred_score.shape == (3,) and out.anomaly_map.shape == (3, 1, 64, 64)
    assert torch.isfinite(out.anomaly_map).all() and float(out.anomaly_map.min()) >= 0
    exported = torch.export.export(net, (images,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
                                   strict=False)
    other = textures(5, seed=3)
    with torch.no_grad():
        got, want = exported.module()(other), net(other)
    torch.testing.assert_close(got.pred_score, want.pred_score)
    torch.testing.assert_close(got.anomaly_map, want.anomaly_map)
    with pytest.raises(AssertionError, match="must not call the Sinkhorn solver"):
        net.train()(images)  # training does transport


def test_images_of_another_size_are_refused() -> None:
    net = tiny_net().eval()
    with pytest.raises(ConfigError, match="image_size"):
        net(torch.rand(1, 3, 96, 96))


def test_model_selection_keeps_the_best_prototypes_per_bank() -> None:
    net = tiny_net(variant="ensemble")
    first = [bank.prototypes.clone() for bank in net.banks]
    assert net.select_improved(torch.tensor([0.5, 0.4])) == [True, True]
    net.train()(textures(4))
    second = [bank.prototypes.clone() for bank in net.banks]
    assert net.select_improved(torch.tensor([0.6, 0.3])) == [False, True]
    torch.testing.assert_close(net.banks[0].selected_prototypes, first[0])
    torch.testing.assert_close(net.banks[1].selected_prototypes, second[1])
    assert [float(bank.best_loss) for bank in net.banks] == pytest.approx([0.5, 0.3])
    net.select_current()
    torch.testing.assert_close(net.banks[0].selected_prototypes, second[0])


# ---------------------------------------------------------------------------------------------- Lightning
def test_lightning_module_defaults() -> None:
    from anomalib import LearningType
    from torchvision.transforms.v2 import Normalize, Resize

    model = Pradot(**TINY)
    transforms = model.pre_processor.transform.transforms
    assert isinstance(transforms[0], Resize) and list(transforms[0].size) == [64, 64]
    assert isinstance(transforms[1], Normalize) and list(transforms[1].mean) == pytest.approx([0.485, 0.456, 0.406])
    assert model.trainer_arguments == {"max_epochs": 50, "max_steps": 200, "num_sanity_val_steps": 0}
    assert model.learning_type == LearningType.ONE_CLASS
    assert model.configure_optimizers() is None
    assert model.visualizer is None
    lite0 = Pradot.configure_pre_processor(224, backbone="tf_efficientnet_lite0").transform.transforms[1]
    assert list(lite0.mean) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(("key", "value"), [("alpha", -0.1), ("alpha", 1.5), ("num_prototypes", 0),
                                            ("reg", 0.0), ("reg", -0.01), ("ema", 1.0), ("ema", -0.1),
                                            ("num_iterations", 0), ("variant", "mixed"), ("image_size", 16),
                                            ("tolerance", -1e-3), ("tolerance", 1.0), ("tolerance", float("nan")),
                                            ("tolerance", "1e-3"), ("tolerance", True)])
def test_invalid_settings(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"pradot: {key}=.*is not usable") as info:
        Pradot(**{**TINY, key: value})
    assert f"--model.{key}" in (info.value.hint or str(info.value))


def test_resnet50_imagenet_weights_fail_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="resnet50"):
        Pradot(backbone="resnet50", layers=["layer3"], pretrained=True, image_size=64)


def test_hook_registers_spec() -> None:
    import inspect

    from uad_plugins.plugins.pradot.hooks import uad_register_models

    spec = uad_register_models()
    assert spec.name == "pradot" and spec.load() is Pradot
    assert set(spec.tags) == {"image", "exportable"}
    params = inspect.signature(Pradot.__init__).parameters
    defaults = spec.default_init_args()
    assert set(defaults) <= set(params)
    assert all(params[k].default == v or list(params[k].default) == v for k, v in defaults.items())
    # the packaged default runs offline (issue 12); the official resnet50 is in configs/pradot_mvtec_paper.yaml
    assert defaults["backbone"] == "tf_efficientnet_lite0" and defaults["layers"] == ["blocks.4"]
    assert (defaults["num_prototypes"], defaults["alpha"], defaults["reg"], defaults["num_iterations"],
            defaults["ema"]) == (16, 0.3, 0.01, 100, 0.95)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pradot, object, Path, dict]:
    """Two epochs with the real engine on a tiny MVTec-layout set (honest validation: held-back normals + Perlin)."""
    from anomalib.data import MVTecAD

    from uad_plugins.engine import UadEngine
    from uad_plugins.testing import make_synthetic_image_dataset

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("pradot_fit")
    make_synthetic_image_dataset(root / "data", n_train=8)
    datamodule = MVTecAD(root=root / "data", category="synthetic", train_batch_size=4, eval_batch_size=4,
                         num_workers=0, seed=0)
    torch.manual_seed(0)
    model = Pradot(**TINY)
    engine = UadEngine(default_root_dir=root / "runs", seed=0, heatmaps=False, accelerator="cpu", devices=1,
                       max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False)
    engine.fit(model=model, datamodule=datamodule)
    logged = {k: float(v) for k, v in engine.trainer.callback_metrics.items()}
    return model, datamodule, Path(engine.best_model_path), logged


@pytest.mark.slow
def test_fit_selects_on_held_out_normals_only(fitted: tuple[Pradot, object, Path, dict]) -> None:
    model, datamodule, _, logged = fitted
    assert "val_transport_loss" in logged
    assert "loss_epoch" in logged or "loss" in logged
    val = datamodule.val_dataloader()
    labels = torch.cat([batch.gt_label for batch in val])
    assert bool((labels == 0).any()) and bool((labels == 1).any())  # the validation set holds both
    transform = model.pre_processor.transform

    def mean_loss(keep_anomalies: bool) -> float:
        total, count = 0.0, 0
        for batch in val:
            images = batch.image if keep_anomalies else batch.image[batch.gt_label == 0]
            total += float(model.model.transport_losses(transform(images)).mean()) * len(images)
            count += len(images)
        return total / count

    # the last validation pass saw the final training prototypes (no update after it)
    assert logged["val_transport_loss"] == pytest.approx(mean_loss(False), rel=1e-5)
    assert logged["val_transport_loss"] != pytest.approx(mean_loss(True), rel=1e-3)
    bank = model.model.banks[0]
    assert math.isfinite(float(bank.best_loss))
    if float(bank.best_loss) == pytest.approx(logged["val_transport_loss"], rel=1e-5):
        torch.testing.assert_close(bank.selected_prototypes, bank.prototypes)


@pytest.mark.slow
def test_checkpoint_round_trip(fitted: tuple[Pradot, object, Path, dict]) -> None:
    model, _, ckpt, _ = fitted
    loaded = Pradot.load_from_checkpoint(ckpt)
    for mine, theirs in zip(model.model.banks, loaded.model.banks, strict=True):
        torch.testing.assert_close(theirs.prototypes, mine.prototypes)
        torch.testing.assert_close(theirs.selected_prototypes, mine.selected_prototypes)
        torch.testing.assert_close(theirs.best_loss, mine.best_loss)
    x = torch.rand(2, 3, 64, 64)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        want, got = model.model(x), loaded.model(x)
    torch.testing.assert_close(got.pred_score, want.pred_score)
    torch.testing.assert_close(got.anomaly_map, want.anomaly_map)


@pytest.mark.parametrize("how", ["select_on_validation=False", "limit_val_batches=0"])
def test_without_selection_the_last_prototypes_are_used(tmp_path: Path, how: str) -> None:
    from anomalib.data import MVTecAD

    from uad_plugins.engine import UadEngine
    from uad_plugins.testing import make_synthetic_image_dataset

    make_synthetic_image_dataset(tmp_path / "data", n_train=6)
    datamodule = MVTecAD(root=tmp_path / "data", category="synthetic", train_batch_size=4, eval_batch_size=4,
                         num_workers=0, seed=0)
    model = Pradot(**{**TINY, "select_on_validation": how != "select_on_validation=False"})
    start = model.model.banks[0].prototypes.clone()
    extra = {"limit_val_batches": 0} if how == "limit_val_batches=0" else {}
    engine = UadEngine(default_root_dir=tmp_path / "runs", seed=0, heatmaps=False, accelerator="cpu", devices=1,
                       max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False, **extra)
    engine.fit(model=model, datamodule=datamodule)
    bank = model.model.banks[0]
    assert not torch.allclose(bank.prototypes, start)
    torch.testing.assert_close(bank.selected_prototypes, bank.prototypes)
    assert math.isinf(float(bank.best_loss))
    assert "val_transport_loss" not in engine.trainer.callback_metrics
