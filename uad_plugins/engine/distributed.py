"""One run across several processes (Lightning's DDP): who writes, who tests, which models may train that way.

Lightning's DDP launcher starts the other processes by running the same command again (``uad fit ...``), and
torchrun or SLURM start every process at once. Either way each process runs the whole command, so the engine asks
here whether it is the **global rank 0** process: only that one creates the run folder and writes into it
(config.yaml, plugins.json, the validation set, the checkpoint, metrics.json); the others build the same honest
validation split (same seed) in a private temporary folder that is removed when they finish, train their share of
each batch, and stop after the fit. Testing runs once, in rank 0, on one device over the whole test set.

The rank is read from the environment the launchers set (``RANK``; else ``NODE_RANK``/``LOCAL_RANK`` from
Lightning's launcher; else ``SLURM_PROCID``), before any process group exists, and from the process group once it
does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import DDPStrategy

from uad_plugins.errors import ConfigError

__all__ = ["GradientFreeDDPStrategy", "batch_norm_note", "check_distributed_model", "end_process_group",
           "is_global_zero", "planned_processes", "private_run_dir", "remove_private_run_dir",
           "single_device_arguments", "strategy_for"]

#: a model's optional attribute: True (trains under DDP with the same result as one process), or a sentence saying
#: why it cannot (see ``uad_plugins.protocols``)
ATTRIBUTE = "distributed_training"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def is_global_zero() -> bool:
    """Whether this process is rank 0 of its job (True in a single process)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank()) == 0
    rank = _env_int("RANK")
    if rank is not None:
        return rank == 0
    local, node = _env_int("LOCAL_RANK"), _env_int("NODE_RANK")
    if local is not None or node is not None:
        return (local or 0) == 0 and (node or 0) == 0
    procid, tasks = _env_int("SLURM_PROCID"), _env_int("SLURM_NTASKS")
    if procid is not None and (tasks or 1) > 1:
        return procid == 0
    return True


def private_run_dir() -> Path:
    """A temporary folder for a process other than rank 0 (removed by :func:`remove_private_run_dir`)."""
    return Path(tempfile.mkdtemp(prefix=f"uad-rank{os.environ.get('RANK') or os.environ.get('LOCAL_RANK', 'n')}-"))


def remove_private_run_dir(path: Path) -> None:
    """Remove a folder made by :func:`private_run_dir`."""
    shutil.rmtree(path, ignore_errors=True)


def check_distributed_model(model: Any, name: str, world_size: int) -> None:
    """ConfigError when ``model`` cannot train in ``world_size`` > 1 processes: it says so itself (its
    ``distributed_training`` attribute is a reason), or it learns without gradients and does not say it combines
    what the processes learn (anomalib's Padim and Patchcore collect statistics or memory banks per process)."""
    if world_size <= 1:
        return
    declared = getattr(model, ATTRIBUTE, None)
    if declared is True:
        return
    if isinstance(declared, str) and declared:
        reason = declared
    elif _learns_by_gradient(model):
        return  # DDP averages the gradients
    else:
        reason = ("it learns without gradients (statistics, prototypes or a memory bank), and under DDP each "
                  "process would learn from its own share of the data only")
    raise ConfigError(f"{name} cannot train in {world_size} processes (DDP): {reason}.",
                      hint="Train it on one device (drop --trainer.strategy / set --trainer.devices 1); "
                           "docs/usage.md lists which models train under DDP.")


def single_device_arguments(args: dict[str, Any]) -> dict[str, Any]:
    """Trainer arguments for testing once, in rank 0, after a distributed fit: one device, one node, no
    distributed strategy (the rest kept)."""
    return {**args, "devices": 1, "num_nodes": 1, "strategy": "auto"}


def end_process_group() -> None:
    """After a distributed fit: wait for every process, then leave the process group, so that rank 0 can test on
    its own (metrics would otherwise wait for the other processes at every sync)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _trains_by_gradient(model: Any) -> bool:
    return any(p.requires_grad for p in model.parameters())


def _learns_by_gradient(model: Any) -> bool:
    """Whether an undeclared model learns by gradients: it has trainable parameters, an optimiser, and does not
    ask for one device (anomalib's Padim and Patchcore suggest ``devices=1`` and return no optimiser, while their
    frozen backbones keep ``requires_grad``)."""
    if not _trains_by_gradient(model):
        return False
    if (getattr(model, "trainer_arguments", None) or {}).get("devices") == 1:
        return False
    try:
        return model.configure_optimizers() is not None
    except Exception:  # noqa: BLE001 - an optimiser that needs a trainer to be built: it has one
        return True


class GradientFreeDDPStrategy(DDPStrategy):
    """Lightning's DDP for a model with nothing to back-propagate (PRADOT moves prototypes by optimal transport).
    torch's ``DistributedDataParallel`` refuses a module without trainable parameters, so the model is not wrapped:
    its buffers are broadcast from rank 0 once (as DDP does when it wraps), and the model combines its own updates
    across processes (``uad_plugins.components.distributed.all_reduce_sum``)."""

    def _setup_model(self, model: Any) -> Any:
        if _trains_by_gradient(model):
            return super()._setup_model(model)
        import torch

        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
        return model


def strategy_for(strategy: Any, model: Any) -> Any:
    """The strategy to give Lightning: ``"ddp"`` for a model that declares DDP support but has no trainable
    parameters becomes :class:`GradientFreeDDPStrategy`, and for one whose steps leave some parameters unused
    (``distributed_unused_parameters``: FADeR trains the base, then the gates) Lightning's
    ``ddp_find_unused_parameters_true``; anything else is passed on unchanged."""
    if strategy != "ddp" or getattr(model, ATTRIBUTE, None) is not True:
        return strategy
    if not _trains_by_gradient(model):
        return GradientFreeDDPStrategy()
    if getattr(model, "distributed_unused_parameters", False):
        return "ddp_find_unused_parameters_true"
    return strategy


def planned_processes(strategy: Any) -> int:
    """How many processes a trainer's strategy will train in (1 for a single-device strategy)."""
    return int(getattr(strategy, "num_processes", 1) or 1) * int(getattr(strategy, "num_nodes", 1) or 1)


def batch_norm_note(model: Any, name: str, processes: int, sync_batchnorm: bool) -> str | None:
    """A sentence for the log when ``model`` trains BatchNorm layers in several processes without
    ``sync_batchnorm``: each process then normalises with its own share of the batch, which is not what one
    process does (``None`` when that does not apply)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    if processes <= 1 or sync_batchnorm:
        return None
    learning = [m for m in model.modules()
                if isinstance(m, _BatchNorm) and any(p.requires_grad for p in m.parameters())]
    if not learning:
        return None
    return (f"{name} trains {len(learning)} BatchNorm layer(s): under DDP each process normalises its own share of "
            "the batch. On GPUs, --trainer.sync_batchnorm true normalises over the whole batch, as one process does "
            "(torch's SyncBatchNorm needs GPUs).")
