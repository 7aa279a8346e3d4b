"""BatchNorm calibration before validation (HR-NAS spec §4.6).

The EMA weights were never run with their own BN statistics, and a shrink changes the features each BN
sees, so before every validation the running statistics are re-estimated: reset, switched to a
cumulative average (``momentum=None``), accumulated over a few training batches in train mode without
gradients, then averaged over processes (the paper's code uses per-GPU BN and only averages the
statistics after calibration).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from hrnas.utils.distributed import all_reduce_sum_, get_world_size, is_distributed, unwrap_model

__all__ = ["calibrate_bn", "default_forward"]


def default_forward(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on a batch: a tensor, or the first element of a tuple/list (``(images, targets)``).

    The input is moved to the device of the model's first parameter or buffer.
    """
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise TypeError("calibrate_bn got an empty batch")
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"calibrate_bn cannot feed a {type(batch).__name__} batch to the model; pass forward=")
    ref = next(iter(model.parameters()), None)
    if ref is None:
        ref = next(iter(model.buffers()), None)
    if ref is not None:
        batch = batch.to(ref.device, non_blocking=True)
    return model(batch)


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in unwrap_model(model).modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: Iterable[Any], num_batches: int,
                 forward: Callable[[nn.Module, Any], Any] | None = None) -> nn.Module:
    """Re-estimate the running statistics of every BatchNorm in ``model`` from ``num_batches`` batches.

    Steps: reset every BN's ``running_mean``/``running_var``/``num_batches_tracked``; set momentum to
    ``None`` (running stats = arithmetic mean of the per-batch statistics: the mean of batch means and
    of unbiased batch variances); run ``forward(model, batch)`` for the first ``num_batches`` batches in
    train mode under ``torch.no_grad()``; restore every module's momentum and train/eval mode; when a
    process group is active, replace the running mean and variance by their mean over processes.

    Args:
        model: the network to calibrate in place (typically the EMA shadow).
        batches: an iterable of training batches (train augmentation, as in the paper); it is consumed
            lazily and may be shorter than ``num_batches``.
        num_batches: how many batches to use (``train.bn_calib_batches``); 0 leaves the model unchanged.
        forward: ``forward(model, batch)``; default :func:`default_forward`.

    Returns:
        ``model`` (calibrated in place).

    Raises:
        ValueError: ``batches`` yielded nothing although ``num_batches`` > 0 (the statistics are then
            restored to their previous values). Every process must call it when distributed.
    """
    if num_batches < 0:
        raise ValueError(f"num_batches must be >= 0, got {num_batches}")
    layers = _bn_layers(model)
    if num_batches == 0 or not layers:
        return model
    forward = forward or default_forward
    modes = {m: m.training for m in model.modules()}
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    seen = 0
    try:
        model.train()
        for batch in batches:
            if seen >= num_batches:
                break
            forward(model, batch)
            seen += 1
    except BaseException:
        _restore(layers, saved, keep_stats=False)
        raise
    finally:
        for module, mode in modes.items():
            module.training = mode
    if seen == 0:
        _restore(layers, saved, keep_stats=False)
        raise ValueError("calibrate_bn: the batch iterable is empty; BN statistics left unchanged")
    _restore(layers, saved, keep_stats=True)
    if is_distributed():
        world = get_world_size()
        for m in layers:
            for stat in (m.running_mean, m.running_var):
                all_reduce_sum_(stat)
                stat.div_(world)
    return model


def _restore(layers: list[nn.modules.batchnorm._BatchNorm], saved: list[tuple], keep_stats: bool) -> None:
    for m, (momentum, mean, var, tracked) in zip(layers, saved, strict=True):
        m.momentum = momentum
        if not keep_stats:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(tracked)
