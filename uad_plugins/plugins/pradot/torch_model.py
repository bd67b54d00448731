"""PRADOT as a plain ``nn.Module``: frozen backbone features, prototype banks fitted by entropic optimal transport.

No Lightning here (see :mod:`uad_plugins.plugins.pradot.model`). Training never uses gradients: each training batch
is transported onto the prototypes with Sinkhorn (POT's log-domain iterations, computed in stabilised scaling form
in one work buffer), and every prototype moves (by EMA) towards the mean of the features transported to it. The
eval forward uses only torch ops (no transport, no numpy), so it exports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from anomalib.data import InferenceBatch
from torch import nn

from uad_plugins.components.backbones import create_feature_extractor
from uad_plugins.components.distributed import all_reduce_sum
from uad_plugins.errors import ConfigError

__all__ = [
    "ABSORB_THRESHOLD",
    "LOG_FLOOR",
    "VARIANTS",
    "PradotModel",
    "PradotTrainOutput",
    "PrototypeBank",
    "SinkhornResult",
    "feature_cost",
    "grid_coordinates",
    "sinkhorn_log",
    "sinkhorn_plan",
    "spatial_cost",
    "variant_alphas",
]

#: variant name -> what it does (the alphas of its members per layer are given by :func:`variant_alphas`)
VARIANTS: dict[str, str] = {
    "local": "one prototype bank per layer with the spatial cost weighted by alpha (structured prototypes)",
    "global": "one prototype bank per layer with alpha = 0 (position-free prototypes)",
    "ensemble": "a global (alpha = 0) and a local (alpha) bank per layer; their anomaly maps are averaged",
}

_TINY = 1e-12


def variant_alphas(variant: str, alpha: float) -> tuple[float, ...]:
    """The spatial weights of the prototype banks one layer gets in ``variant``."""
    if variant == "local":
        return (float(alpha),)
    if variant == "global":
        return (0.0,)
    if variant == "ensemble":
        return (0.0, float(alpha))
    raise ConfigError(f"pradot: unknown variant {variant!r}.",
                      hint=f"Use one of: {', '.join(VARIANTS)} (--model.variant).")


class PradotTrainOutput(NamedTuple):
    """One training update: the mean transport cost over the banks, each bank's cost ``<plan, M>`` and the Sinkhorn
    iterations each bank's transport ran."""

    loss: torch.Tensor
    bank_losses: torch.Tensor
    iterations: torch.Tensor


def grid_coordinates(height: int, width: int) -> torch.Tensor:
    """Normalised coordinates in ``[0, 1]^2`` of an ``height x width`` grid, row-major (``[H * W, 2]``)."""
    rows = torch.linspace(0.0, 1.0, height)
    cols = torch.linspace(0.0, 1.0, width)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def spatial_cost(height: int, width: int) -> torch.Tensor:
    """Euclidean distance between grid positions divided by its maximum (``[H * W, H * W]``, values in [0, 1])."""
    coords = grid_coordinates(height, width)
    dist = torch.cdist(coords, coords)
    return dist / dist.max().clamp_min(_TINY)


def feature_cost(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine cost ``1 - cos(f, p)`` between features ``[..., C]`` and prototypes ``[K, C]`` (``[..., K]``)."""
    return 1.0 - F.normalize(features, dim=-1) @ F.normalize(prototypes, dim=-1).T


#: arguments of ``exp`` inside the solver are clamped to at least this: ``exp(-80)`` (1.8e-35) is far below float32's
#: resolution of any sum it enters (which holds at least one term equal to 1), but is still a normal number. Below
#: about -88 float32 ``exp`` underflows to denormals or zero, and torch's vectorised ``exp`` then takes a slow path,
#: about 15x slower per element (measured: 8 ms vs 110-250 ms for 1568 x 3136 elements); with reg = 0.01 most of a
#: PRADOT plan's entries are down there, so this clamp alone makes an iteration several times cheaper.
LOG_FLOOR = -80.0


class SinkhornResult(NamedTuple):
    """What :func:`sinkhorn_log` returns.

    ``plan [N, K]``; ``iterations`` run; ``violation`` the last measured marginal violation (the tolerance rule's
    L1 measure when ``tolerance > 0``, POT's L2 column measure otherwise; ``nan`` when none was measured);
    ``absorptions`` how many times the scalings were absorbed into the kernel (each one rebuilds it: three passes
    over the matrix).
    """

    plan: torch.Tensor
    iterations: int
    violation: float
    absorptions: int = 0


def _logsumexp_(values: torch.Tensor, dim: int) -> torch.Tensor:
    """``logsumexp`` of ``values`` along ``dim``, computed in place: ``values`` is overwritten.

    Terms more than ``-LOG_FLOOR`` below the largest one count as ``exp(LOG_FLOOR)`` of it (invisible in the sum,
    and it keeps ``exp`` off its slow underflow path).
    """
    peak = values.amax(dim=dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    values.sub_(peak).clamp_(min=LOG_FLOOR).exp_()
    return values.sum(dim=dim).log_().add_(peak.squeeze(dim))


#: the scalings ``u``, ``v`` of :func:`sinkhorn_log` are absorbed into its kernel once ``max |log u|`` or
#: ``max |log v|`` exceeds this
ABSORB_THRESHOLD = 20.0

#: a kernel row (column) sum below this is computed again in the log domain and absorbed (its terms may be denormal
#: or zero in float32); sums of a well-scaled kernel are many orders of magnitude larger
_SUM_GUARD = 1e-30


def _build_kernel_(work: torch.Tensor, scaled: torch.Tensor, big_u: torch.Tensor, big_v: torch.Tensor) -> None:
    """``work = exp(max(scaled + U_i + V_j, LOG_FLOOR))`` in place (three passes plus the clamp)."""
    torch.add(scaled, big_u[:, None], out=work)
    work.add_(big_v[None, :]).clamp_(min=LOG_FLOOR).exp_()


def _log_rows(scaled: torch.Tensor, rows: torch.Tensor, big_v: torch.Tensor, log_a: float) -> torch.Tensor:
    """The log-domain ``U`` update of ``rows`` only: ``log a - logsumexp_j(scaled[rows] + V)``."""
    return _logsumexp_(scaled[rows] + big_v[None, :], 1).neg_().add_(log_a)


def _log_columns(scaled: torch.Tensor, columns: torch.Tensor, big_u: torch.Tensor, log_b: float) -> torch.Tensor:
    """The log-domain ``V`` update of ``columns`` only: ``log b - logsumexp_i(scaled[:, columns] + U)``."""
    return _logsumexp_(scaled[:, columns] + big_u[:, None], 0).neg_().add_(log_b)


def sinkhorn_log(cost: torch.Tensor, reg: float, num_iterations: int, tolerance: float = 0.0,
                 stop_threshold: float = 1e-9,
                 monitor: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> SinkhornResult:
    """Entropic OT plan between uniform marginals for ``cost [N, K]``: POT's log-domain Sinkhorn iterations, computed
    in stabilised scaling form, with a stopping rule.

    The iterates are those of POT's ``ot.bregman.sinkhorn(a, b, cost, reg, method="sinkhorn_log")`` (the dual ``V``
    update, then ``U``; the plan is ``exp(-cost / reg + U + V)``, so its row marginal is exact), computed as
    Schmitzer's stabilised scaling algorithm (the idea of POT's ``sinkhorn_stabilized``): the log duals are split
    into absorbed parts and scalings, ``U = Ua + log u``, ``V = Va + log v``, with the kernel ``Kt = exp(-cost / reg
    + Ua_i + Va_j)`` kept in one ``N x K`` work buffer. An iteration is then two matrix-vector products, ``v = b /
    (Kt^T u)`` and ``u = a / (Kt v)`` (one pass over the matrix each, against about ten for the log-domain
    ``logsumexp``s: add, max, subtract, exp, sum per half-iteration). When ``max |log u|`` or ``max |log v|``
    exceeds :data:`ABSORB_THRESHOLD` the scalings are absorbed (``Ua += log u``, ``Va += log v``, ``Kt`` rebuilt in
    place, ``u = v = 1``). The first iteration runs in the log domain, from ``U = 0`` as POT starts, and ``Kt`` is
    built from its duals, so every kernel row and column starts at the scale of a plan (``exp(-cost / reg)`` alone
    underflows whole columns in float32 at reg 0.01). A kernel row or column sum below ``1e-30`` (terms lost to
    underflow) is computed again in the log domain and absorbed, so no ``inf``/``nan`` comes from an underflowed
    kernel.

    Stopping, at most ``num_iterations`` iterations:

    * ``tolerance > 0`` (ours): stop after the first iteration whose row-marginal violation
      ``sum_n |plan_n 1 - 1/N|`` (L1, the share of the mass in the wrong place, at the dual pair the ``u`` update
      starts from) is at most ``tolerance``. It is read off the ``u`` update itself, ``mean_n |u_old / u_new -
      1|`` (``= exp(U_old - U_new)``), so checking it costs no pass over the matrix; checked after every iteration.
    * ``tolerance == 0`` (POT's rule, as the official code runs it): every 10th iteration the column marginal
      ``v * (Kt^T u)`` is compared with ``1/K`` (L2) and the loop stops when that is below ``stop_threshold``
      (POT's ``stopThr``, 1e-9 by default, which float32 plans of PRADOT's size never reach: 100 iterations always
      run). ``Kt^T u`` is the next iteration's ``v`` update, so the check costs no extra pass either.

    ``monitor(iteration, U, V)``, when given, is called after every iteration (0-based) with the log-domain duals
    (for measurements such as ``tools/pradot_transport_profile.py``). Training only: never part of the eval graph.
    """
    n, k = cost.shape
    scaled = cost / -reg
    work = torch.empty_like(scaled)
    log_a, log_b = -math.log(n), -math.log(k)
    mass_a, mass_b = 1.0 / n, 1.0 / k
    low, high = math.exp(-ABSORB_THRESHOLD), math.exp(ABSORB_THRESHOLD)
    # iteration 1 in the log domain, from U = 0 (POT's start); the kernel is then its plan
    work.copy_(scaled)
    big_v = _logsumexp_(work, 0).neg_().add_(log_b)
    torch.add(scaled, big_v[None, :], out=work)
    big_u = _logsumexp_(work, 1).neg_().add_(log_a)
    violation = float(big_u.neg().exp_().sub_(1.0).abs_().mean()) if tolerance > 0 else math.nan
    _build_kernel_(work, scaled, big_u, big_v)
    u = torch.ones(n, dtype=cost.dtype, device=cost.device)
    v = torch.ones(k, dtype=cost.dtype, device=cost.device)
    absorptions = 0
    kernel_u = v  # Kt^T u: computed at the end of each iteration
    iterations = 0
    for iteration in range(num_iterations):
        iterations = iteration + 1
        if iteration > 0:
            if float(kernel_u.min()) < _SUM_GUARD:  # columns lost to underflow: their V in the log domain
                big_u = big_u + u.log()
                lost = torch.nonzero(kernel_u < _SUM_GUARD).squeeze(1)
                big_v = big_v + kernel_u.clamp(min=_SUM_GUARD).reciprocal_().mul_(mass_b).log_()
                big_v[lost] = _log_columns(scaled, lost, big_u, log_b)
                _build_kernel_(work, scaled, big_u, big_v)
                u, v, absorptions = torch.ones_like(u), torch.ones_like(v), absorptions + 1
            else:
                v = kernel_u.reciprocal_().mul_(mass_b)
            kernel_v = torch.mv(work, v)
            previous = u
            if float(kernel_v.min()) < _SUM_GUARD:  # rows lost to underflow: their U in the log domain
                big_v = big_v + v.log()
                lost = torch.nonzero(kernel_v < _SUM_GUARD).squeeze(1)
                new_u = big_u + kernel_v.clamp(min=_SUM_GUARD).reciprocal_().mul_(mass_a).log_()
                new_u[lost] = _log_rows(scaled, lost, big_v, log_a)
                if tolerance > 0:
                    violation = float((big_u + previous.log() - new_u).exp_().sub_(1.0).abs_().mean())
                big_u = new_u
                _build_kernel_(work, scaled, big_u, big_v)
                u, v, absorptions = torch.ones_like(u), torch.ones_like(v), absorptions + 1
            else:
                u = kernel_v.reciprocal_().mul_(mass_a)
                if tolerance > 0:  # row masses at (previous, v) are previous * Kt v = a * previous / u
                    violation = float((previous / u).sub_(1.0).abs_().mean())
        if monitor is not None:
            monitor(iteration, big_u + u.log(), big_v + v.log())
        if tolerance > 0 and violation <= tolerance:
            break
        u_low, u_high = torch.aminmax(u)
        v_low, v_high = torch.aminmax(v)
        if min(float(u_low), float(v_low)) < low or max(float(u_high), float(v_high)) > high:
            big_u, big_v = big_u + u.log(), big_v + v.log()
            _build_kernel_(work, scaled, big_u, big_v)
            u, v, absorptions = torch.ones_like(u), torch.ones_like(v), absorptions + 1
            kernel_u = work.sum(dim=0)
        elif iteration + 1 < num_iterations or (tolerance == 0 and iteration % 10 == 0):
            kernel_u = torch.mv(work.T, u)  # the next v update's product, and POT's column check
        if tolerance == 0 and iteration % 10 == 0:  # the right marginal's violation, as POT checks it
            violation = float(torch.linalg.vector_norm(v * kernel_u - mass_b))
            if violation < stop_threshold:
                break
    big_u, big_v = big_u + u.log(), big_v + v.log()
    # plan entries below exp(LOG_FLOOR) count as exp(LOG_FLOOR): at most N K 1.8e-35 of extra mass in all
    _build_kernel_(work, scaled, big_u, big_v)
    return SinkhornResult(work, iterations, violation, absorptions)


def sinkhorn_plan(cost: torch.Tensor, reg: float, num_iterations: int, stop_threshold: float = 1e-9,
                  tolerance: float = 0.0) -> torch.Tensor:
    """The plan of :func:`sinkhorn_log` (same arguments) alone."""
    return sinkhorn_log(cost, reg, num_iterations, tolerance=tolerance, stop_threshold=stop_threshold).plan


class PrototypeBank(nn.Module):
    """``num_prototypes`` prototypes per position of one layer's ``height x width`` grid, with a fixed structure.

    Prototype ``m = p * H * W + k`` has a feature vector (buffer ``prototypes [P * H * W, C]``, initialised
    uniformly in [0, 1) as in the official code) and the fixed coordinate of grid position ``k``. The transport cost
    from the feature at position ``n`` to prototype ``m`` is ``(1 - alpha) * feature_cost / max + alpha *
    spatial_cost[n, k]``.

    ``prototypes`` is the training state; ``selected_prototypes`` is what inference uses (a copy made when a
    validation pass finds a lower held-out transport cost, or after each update when there is no selection).
    """

    def __init__(self, channels: int, grid: tuple[int, int], num_prototypes: int, alpha: float) -> None:
        super().__init__()
        self.channels = int(channels)
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_prototypes = int(num_prototypes)
        self.alpha = float(alpha)
        positions = self.grid[0] * self.grid[1]
        self.register_buffer("prototypes", torch.rand(self.num_prototypes * positions, self.channels))
        self.register_buffer("selected_prototypes", self.prototypes.clone())
        self.register_buffer("best_loss", torch.tensor(float("inf")))
        self.register_buffer("spatial", spatial_cost(*self.grid), persistent=False)
        self.last_iterations = 0  # Sinkhorn iterations of the last transport (not saved)

    @property
    def positions(self) -> int:
        """Grid positions ``H * W``."""
        return self.grid[0] * self.grid[1]

    def fused_cost(self, features: torch.Tensor, prototypes: torch.Tensor, scale: str) -> torch.Tensor:
        """Transport cost ``[B, H*W, P, H*W]`` of features ``[B, H*W, C]`` to ``prototypes``.

        ``scale`` says what the cosine cost is divided by: ``"batch"`` its maximum over the whole batch (training,
        as in the official code), ``"image"`` each image's maximum (inference; the official code scores one image
        at a time), ``"none"`` nothing.
        """
        batch, positions, _ = features.shape
        if positions != self.positions:
            raise ConfigError(
                f"pradot: features have {positions} positions but the prototypes were built for a "
                f"{self.grid[0]}x{self.grid[1]} grid.",
                hint="Feed images of the size the model was built for (--model.image_size).")
        cost = feature_cost(features, prototypes)
        if scale == "batch":
            cost = cost / cost.amax().clamp_min(_TINY)
        elif scale == "image":
            cost = cost / cost.amax(dim=(1, 2), keepdim=True).clamp_min(_TINY)
        cost = cost.reshape(batch, positions, self.num_prototypes, positions)
        if self.alpha == 0.0:
            return cost
        return (1.0 - self.alpha) * cost + self.alpha * self.spatial.to(cost.dtype)[:, None, :]

    def nearest_cost(self, features: torch.Tensor, normalize_per_image: bool = True) -> torch.Tensor:
        """Cost of each feature ``[B, H*W, C]`` to its nearest selected prototype (``[B, H*W]``); no transport."""
        cost = self.fused_cost(features, self.selected_prototypes, "image" if normalize_per_image else "none")
        return cost.flatten(2).amin(dim=2)

    @torch.no_grad()
    def transport(self, features: torch.Tensor, reg: float, num_iterations: int, tolerance: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Entropic OT of the batch's features ``[B, H*W, C]`` onto the training prototypes (:func:`sinkhorn_log`
        with at most ``num_iterations`` iterations and ``tolerance``; the count run is kept in ``last_iterations``).

        Returns ``(plan [B*H*W, P*H*W], cost [B*H*W, P*H*W])``, both float32.
        """
        features = features.float()
        cost = self.fused_cost(features, self.prototypes.float(), "batch")
        cost = cost.reshape(features.shape[0] * features.shape[1], -1)
        result = sinkhorn_log(cost, reg, num_iterations, tolerance=tolerance)
        self.last_iterations = result.iterations
        return result.plan, cost

    @torch.no_grad()
    def transport_loss(self, features: torch.Tensor, reg: float, num_iterations: int, tolerance: float = 0.0
                       ) -> torch.Tensor:
        """``<plan, cost>`` of the batch onto the training prototypes (no update; used for model selection)."""
        plan, cost = self.transport(features, reg, num_iterations, tolerance)
        return (plan * cost).sum()

    @torch.no_grad()
    def update(self, features: torch.Tensor, reg: float, num_iterations: int, ema: float, tolerance: float = 0.0
               ) -> torch.Tensor:
        """One training step: transport, then ``prototype <- ema * prototype + (1 - ema) * transported mean``.

        The transported mean of prototype ``m`` is ``sum_n plan[n, m] f_n / sum_n plan[n, m]`` (a prototype that
        received no mass keeps its value). Returns the transport cost ``<plan, cost>``.
        """
        plan, cost = self.transport(features, reg, num_iterations, tolerance)
        flat = features.float().reshape(-1, features.shape[-1])
        mass = plan.sum(dim=0)
        weighted = plan.T @ flat
        # data-parallel training: every process moves the prototypes by the mean transported onto them from all
        # processes' batches, so the prototypes stay identical everywhere (nothing happens in one process)
        all_reduce_sum(weighted, mass)
        means = weighted / mass.clamp_min(_TINY)[:, None]
        current = self.prototypes.float()
        means = torch.where(mass[:, None] > 0, means, current)
        self.prototypes.copy_((ema * current + (1.0 - ema) * means).to(self.prototypes.dtype))
        return (plan * cost).sum()

    @torch.no_grad()
    def select(self, loss: torch.Tensor | float | None = None) -> None:
        """Make the training prototypes the inference prototypes (and remember ``loss`` as the best one)."""
        self.selected_prototypes.copy_(self.prototypes)
        if loss is not None:
            self.best_loss.fill_(float(loss))


class PradotModel(nn.Module):
    """PRADOT (Trombetta & Lartizien, 2025): prototypes per grid position learned by entropic optimal transport.

    Args:
        backbone: timm backbone (frozen); default ``tf_efficientnet_lite0`` (offline weights), the official code
            uses ``resnet50`` (``layer3``).
        layers: feature layers; each gets its own prototype bank(s) and the maps are averaged.
        pretrained: ``True`` (ImageNet weights), ``False`` (random init) or a local weights file.
        image_size: square input side; fixes every layer's grid (224 -> 14x14 at stride 16).
        num_prototypes: prototypes per grid position (16).
        variant: ``"local"`` (spatial weight ``alpha``), ``"global"`` (``alpha = 0``) or ``"ensemble"`` (both per
            layer, maps averaged: with ``layers = [layer2, layer3]`` the paper's 4-model average).
        alpha: spatial weight of the local prototypes (0.3).
        reg: entropic regularisation of Sinkhorn (0.01).
        num_iterations: at most this many Sinkhorn iterations per training batch (100, as the official code).
        tolerance: stop a batch's Sinkhorn early once its marginal violation is at most this (see
            :func:`sinkhorn_log`); 0 runs POT's rule, which at float32 means ``num_iterations`` always.
        ema: prototype momentum (0.95).
        normalize_per_image: divide each test image's cosine cost by its maximum, as the official code does.

    Eval mode: ``forward(images) -> InferenceBatch(pred_score [B], anomaly_map [B, 1, H, W])`` with the map the
    cost to the nearest prototype (bilinearly upsampled, ``align_corners=True``; banks averaged) and the score its
    maximum. Training mode: ``forward`` runs :meth:`training_update` (prototypes change) and returns its
    :class:`PradotTrainOutput`.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        layers: Sequence[str] = ("blocks.4",),
        pretrained: bool | str = True,
        image_size: int = 224,
        num_prototypes: int = 16,
        variant: str = "local",
        alpha: float = 0.3,
        reg: float = 0.01,
        num_iterations: int = 100,
        ema: float = 0.95,
        normalize_per_image: bool = True,
        tolerance: float = 0.0,
    ) -> None:
        super().__init__()
        alphas = variant_alphas(variant, alpha)
        self.layers = list(layers)
        self.variant = variant
        self.reg = float(reg)
        self.num_iterations = int(num_iterations)
        self.tolerance = float(tolerance)
        self.ema = float(ema)
        self.normalize_per_image = bool(normalize_per_image)
        self.feature_extractor = create_feature_extractor(backbone, self.layers, pretrained)
        maps = self.feature_extractor.probe(image_size, owner="pradot",
                                            hint="Use a larger --model.image_size (224 in the paper).")
        self.grids: list[tuple[int, int]] = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        self.bank_layers: list[int] = []
        banks = []
        for index, (fmap, grid) in enumerate(zip(maps, self.grids, strict=True)):
            for bank_alpha in alphas:
                banks.append(PrototypeBank(int(fmap.shape[1]), grid, num_prototypes, bank_alpha))
                self.bank_layers.append(index)
        self.banks = nn.ModuleList(banks)

    # ------------------------------------------------------------------ features
    def features(self, images: torch.Tensor, maps: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Frozen backbone features per layer, flattened to ``[B, H*W, C]`` (row-major positions); ``maps`` are the
        backbone's maps of ``images`` when already at hand (a feature cache), else they are computed."""
        if maps is None:
            with torch.no_grad():
                maps = self.feature_extractor(images)
        return [fmap.flatten(2).transpose(1, 2) for fmap in maps]

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def training_update(self, images: torch.Tensor, maps: list[torch.Tensor] | None = None) -> PradotTrainOutput:
        """Transport the batch onto every bank and move the prototypes (EMA); no gradients, no optimiser
        (``maps``: see :meth:`features`)."""
        feats = self.features(images, maps)
        with torch.autocast(device_type=images.device.type, enabled=False):
            losses = torch.stack([bank.update(feats[layer], self.reg, self.num_iterations, self.ema, self.tolerance)
                                  for bank, layer in zip(self.banks, self.bank_layers, strict=True)])
        iterations = torch.tensor([float(bank.last_iterations) for bank in self.banks])
        return PradotTrainOutput(losses.mean(), losses, iterations)

    @torch.no_grad()
    def transport_losses(self, images: torch.Tensor) -> torch.Tensor:
        """Each bank's transport cost for ``images`` (``[num_banks]``) without changing any prototype."""
        feats = self.features(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            return torch.stack([bank.transport_loss(feats[layer], self.reg, self.num_iterations, self.tolerance)
                                for bank, layer in zip(self.banks, self.bank_layers, strict=True)])

    @torch.no_grad()
    def select_current(self) -> None:
        """Use the current training prototypes of every bank for inference."""
        for bank in self.banks:
            bank.select()

    @torch.no_grad()
    def select_improved(self, losses: torch.Tensor) -> list[bool]:
        """Model selection per bank: a bank whose held-out loss beats its best so far gets its current prototypes
        selected. Returns which banks changed."""
        changed = []
        for bank, loss in zip(self.banks, losses.tolist(), strict=True):
            better = loss < float(bank.best_loss)
            if better:
                bank.select(loss)
            changed.append(better)
        return changed

    # ------------------------------------------------------------------ inference
    def predict(self, images: torch.Tensor) -> InferenceBatch:
        """Cost to the nearest selected prototype per position, upsampled and averaged over banks; score = max."""
        feats = self.features(images)
        batch = images.shape[0]
        size = (images.shape[-2], images.shape[-1])
        total: torch.Tensor | None = None
        for bank, layer in zip(self.banks, self.bank_layers, strict=True):
            height, width = bank.grid
            scores = bank.nearest_cost(feats[layer], self.normalize_per_image).reshape(batch, 1, height, width)
            upsampled = F.interpolate(scores, size=size, mode="bilinear", align_corners=True)
            total = upsampled if total is None else total + upsampled
        assert total is not None
        anomaly_map = total / len(self.banks)
        return InferenceBatch(pred_score=anomaly_map.amax(dim=(1, 2, 3)), anomaly_map=anomaly_map)

    def forward(self, images: torch.Tensor) -> InferenceBatch | PradotTrainOutput:
        """Eval: ``InferenceBatch``; training: one transport update (see :meth:`training_update`)."""
        if self.training:
            return self.training_update(images)
        return self.predict(images)
