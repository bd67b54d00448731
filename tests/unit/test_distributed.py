"""Data-parallel pieces without Lightning: rank detection from the launchers' environment, the models refused or
let through, and PRADOT's prototype update summed across two real gloo processes (issue 17)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

torch.set_num_threads(2)

_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS", "WORLD_SIZE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("env", "zero"), [
    ({}, True),
    ({"RANK": "0", "LOCAL_RANK": "0"}, True), ({"RANK": "3", "LOCAL_RANK": "1"}, False),  # torchrun
    ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True), ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, False),  # Lightning
    ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # rank 0 of the second node
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, True), ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, False),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, True),
])
def test_global_zero_is_read_from_the_launchers_environment(clean_env: pytest.MonkeyPatch, env: dict[str, str],
                                                            zero: bool) -> None:
    from uad_plugins.engine.distributed import is_global_zero

    for name, value in env.items():
        clean_env.setenv(name, value)
    assert is_global_zero() is zero


class _Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2), requires_grad=False)


class _Trainable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _NoOptimiser(_Trainable):
    """Trainable-looking parameters (a frozen backbone that keeps requires_grad) but no optimiser."""

    def configure_optimizers(self) -> None:
        return None


class _OneDevice(_Trainable):
    trainer_arguments = {"devices": 1}  # what anomalib's Padim and Patchcore suggest


def test_models_are_refused_or_let_through_for_several_processes() -> None:
    from uad_plugins.engine.distributed import GradientFreeDDPStrategy, check_distributed_model, strategy_for
    from uad_plugins.errors import ConfigError

    for model in (_Frozen(), _Trainable()):
        check_distributed_model(model, "m", 1)  # one process: always fine
    check_distributed_model(_Trainable(), "m", 2)  # gradients only: DDP averages them
    for model in (_Frozen(), _NoOptimiser(), _OneDevice()):
        with pytest.raises(ConfigError, match="learns without gradients"):
            check_distributed_model(model, "padim", 2)
    refusing = _Trainable()
    refusing.distributed_training = "it collects training windows in memory"
    with pytest.raises(ConfigError, match="collects training windows") as info:
        check_distributed_model(refusing, "signal_nearest", 2)
    assert "--trainer.devices 1" in info.value.hint
    declared = _Frozen()
    declared.distributed_training = True
    check_distributed_model(declared, "pradot", 2)
    assert isinstance(strategy_for("ddp", declared), GradientFreeDDPStrategy)
    assert strategy_for("ddp", _Trainable()) == "ddp" and strategy_for("auto", declared) == "auto"
    staged = _Trainable()
    staged.distributed_training, staged.distributed_unused_parameters = True, True
    assert strategy_for("ddp", staged) == "ddp_find_unused_parameters_true"
    assert strategy_for("ddp_spawn", staged) == "ddp_spawn"  # a strategy the user chose otherwise is theirs


def test_built_in_models_say_whether_they_train_under_ddp() -> None:
    """Every built-in model declares its DDP status (True, or the reason it cannot), so none is let through or
    refused by accident."""
    from uad_plugins.factory import list_components

    for spec in list_components("model"):
        declared = getattr(spec.load(), "distributed_training", None)
        assert declared is True or (isinstance(declared, str) and declared), spec.name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bank_worker(rank: int, port: int, features: torch.Tensor, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from uad_plugins.plugins.pradot.torch_model import PrototypeBank

        torch.manual_seed(0)
        bank = PrototypeBank(channels=features.shape[-1], grid=(2, 2), num_prototypes=2, alpha=0.3)
        bank.update(features[rank::2], reg=0.05, num_iterations=50, ema=0.5)
        torch.save(bank.prototypes, out.format(rank=rank))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_pradot_prototype_updates_are_summed_over_processes(tmp_path: Path) -> None:
    """Two gloo processes, each with half of a batch: both end with the same prototypes, and those are the EMA step
    towards the transported mean of the union (each half's plan, weighted sums and masses added)."""
    import torch.multiprocessing as mp

    from uad_plugins.plugins.pradot.torch_model import PrototypeBank

    features = torch.rand(4, 4, 8, generator=torch.Generator().manual_seed(1))  # [images, positions, channels]
    out = str(tmp_path / "rank{rank}.pt")
    mp.spawn(_bank_worker, args=(_free_port(), features, out), nprocs=2, join=True)
    first, second = (torch.load(out.format(rank=r)) for r in (0, 1))
    assert torch.equal(first, second)

    torch.manual_seed(0)
    bank = PrototypeBank(channels=8, grid=(2, 2), num_prototypes=2, alpha=0.3)
    start = bank.prototypes.clone()
    weighted, mass = torch.zeros_like(start), torch.zeros(len(start))
    for half in (features[0::2], features[1::2]):
        plan, _ = bank.transport(half, 0.05, 50, 0.0)
        weighted += plan.T @ half.reshape(-1, 8)
        mass += plan.sum(dim=0)
    expected = 0.5 * start + 0.5 * weighted / mass[:, None]
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-6)
    alone = PrototypeBank(channels=8, grid=(2, 2), num_prototypes=2, alpha=0.3)
    alone.prototypes.copy_(start)
    alone.update(features[0::2], reg=0.05, num_iterations=50, ema=0.5)
    assert not torch.allclose(alone.prototypes, first)  # one process's half alone gives other prototypes
