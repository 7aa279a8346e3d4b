"""Multi-process training utilities for ``torchrun`` (HR-NAS spec §5: per-GPU BN, data parallel).

:func:`init_distributed` reads the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins the process group — NCCL when the process
drives a CUDA device, gloo on CPU. Run as a single plain process, it does nothing and every collective
below degrades to the identity, so the same training code runs with and without ``torchrun``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "all_reduce_sum_",
    "barrier",
    "broadcast_object",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main",
    "unwrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` in ``[0, world_size)``, ``local_rank`` on its machine and the
    ``device`` it should use (``cuda:<local_rank>`` or ``cpu``)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True for rank 0 (the process that logs and writes checkpoints)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if there is one; pick this process's device.

    Args:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. Under
            ``torchrun`` with CUDA the device is ``cuda:<LOCAL_RANK>`` (an explicit index is ignored).
        backend: process-group backend; default NCCL on CUDA, gloo on CPU.

    Returns:
        :class:`DistInfo`. With ``WORLD_SIZE`` unset or 1 no process group is created.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "auto":
        use_cuda = torch.cuda.is_available()
    elif device == "cpu":
        use_cuda = False
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available")
        use_cuda = True
    else:
        raise ValueError(f"unknown device {device!r} (expected auto, cpu, cuda or cuda:N)")

    if use_cuda:
        if world_size > 1:
            torch_device = torch.device("cuda", local_rank)
        else:
            torch_device = torch.device(device if device.startswith("cuda:") else "cuda")
        if torch_device.index is not None:
            torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device("cpu")

    if world_size > 1 and not dist.is_initialized():
        if not dist.is_available():  # pragma: no cover - torch builds without distributed
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
        chosen = backend or ("nccl" if use_cuda else "gloo")
        kwargs: dict[str, Any] = {"backend": chosen, "rank": rank, "world_size": world_size}
        if chosen == "nccl":
            kwargs["device_id"] = torch_device
        dist.init_process_group(**kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def is_distributed() -> bool:
    """True when a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, or when not distributed."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes **in place**; return it (unchanged when not distributed)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all processes as a new tensor (a copy when not distributed).

    Integer tensors are averaged in float64 and returned as float64.
    """
    out = tensor.detach().clone()
    if not out.is_floating_point():
        out = out.to(torch.float64)
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every process (any picklable object; identity when not
    distributed). Every process must call it; the value passed on other ranks is ignored."""
    if not is_distributed():
        return obj
    box = [obj]
    device = None
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    dist.broadcast_object_list(box, src=src, device=device)
    return box[0]


def cleanup() -> None:
    """Leave and destroy the process group if one is active."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user module under ``DistributedDataParallel``/``DataParallel`` and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
