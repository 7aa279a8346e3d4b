"""Optimizers and the paper's manual L2 penalty (HR-NAS spec §4.2, §5).

:func:`build_optimizer` makes a stock ``torch.optim`` SGD, RMSprop or AdamW with two parameter groups —
``decay`` (parameters with ≥ 2 dimensions: conv and linear weights, embeddings) and ``no_decay``
(1-d parameters: BN/LN scales and shifts, biases) — so the state and ``state_dict`` are the standard
ones and a shrink can remap them tensor by tensor.

Weight decay modes (``optim.wd_mode``):

- ``optimizer``: the optimizer's own decay (decoupled for AdamW, added to the gradient for SGD/RMSprop)
  on the ``decay`` group only;
- ``l2_conv_linear``: the paper's ``weight_decay_method: mnas``: optimizer decay 0 in both groups and
  ``l2_penalty(model, wd) = ½·wd·Σ w²`` over conv/linear weights (≥ 2-d) added to the loss by the
  trainer (pass the classifier bias through ``extra`` to match the paper exactly).

RMSprop: the paper's code uses an RMSprop with ``eps = 1e-3`` *inside* the square root,
``w -= lr·g / sqrt(v + eps)``; ``torch.optim.RMSprop`` adds it *outside*, ``g / (sqrt(v) + eps)``. We keep
the stock class (standard state, remappable by a shrink) and translate the epsilon instead:
``eps_torch = sqrt(eps_config)`` gives the same denominator when ``v → 0`` (where eps matters) and when
``v ≫ eps``; in between the torch denominator is larger by at most a factor √2. Everything else matches
the paper's optimizer (``square_avg`` starts at 0, momentum buffer ``m·buf + g/denominator``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from hrnas.engine.config import OptimConfig

__all__ = ["build_optimizer", "l2_penalty", "param_groups", "rmsprop_torch_eps"]


def rmsprop_torch_eps(tf_eps: float) -> float:
    """The ``torch.optim.RMSprop`` epsilon (outside the sqrt) standing for TF's ``eps`` inside it."""
    return math.sqrt(tf_eps)


def param_groups(
    model: nn.Module, weight_decay: float, factors: Iterable[torch.Tensor] = (), factor_lr: float | None = None
) -> list[dict]:
    """Groups over the trainable parameters: ``decay`` (≥ 2-d, ``weight_decay``) and ``no_decay`` (1-d
    and scalars, decay 0); with ``factor_lr``, the tensors of ``factors`` (importance factors) form a
    third group ``factors`` with that lr and no decay. Each group has a ``name`` and lists parameters in
    module order; empty groups are dropped."""
    special = {id(p) for p in factors} if factor_lr is not None else set()
    decay, no_decay, factor = [], [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if id(param) in special:
            factor.append(param)
        else:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    if factor:
        groups.append({"name": "factors", "params": factor, "weight_decay": 0.0, "lr": factor_lr})
    return [g for g in groups if g["params"]]


def _fusable(groups: list[dict]) -> bool:
    """Whether torch's fused optimizer kernels take these parameters: floating point, on CPU or CUDA."""
    params = [p for g in groups for p in g["params"]]
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build_optimizer(
    model: nn.Module, cfg_optim: OptimConfig, factors: Iterable[torch.Tensor] = (), factor_lr_mult: float = 1.0
) -> torch.optim.Optimizer:
    """Build the optimizer of ``cfg_optim`` over ``model``'s trainable parameters.

    ``factors`` (the search's importance factors) get ``factor_lr_mult`` × lr when the multiplier is not 1.

    SGD and AdamW use torch's fused kernels when the parameters allow it, RMSprop its foreach path.
    The lr is ``cfg_optim.lr`` (already for the global batch). With ``wd_mode: l2_conv_linear`` the
    optimizer's weight decay is 0 and the trainer must add :func:`l2_penalty` to the loss.

    Raises:
        ValueError: unknown optimizer name or a model without trainable parameters.
    """
    cfg = cfg_optim
    wd = cfg.weight_decay if cfg.wd_mode == "optimizer" else 0.0
    factor_lr = cfg.lr * factor_lr_mult if factor_lr_mult != 1.0 else None
    groups = param_groups(model, wd, factors, factor_lr)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    # one fused kernel (or one foreach pass) over all parameters instead of a loop of small ops per tensor:
    # on a CPU the loop costs about 14 ms per step for the demo supernet's 448 tensors, fused about 3 ms
    fused = {"fused": True} if _fusable(groups) else {}
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd, **fused
        )
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            groups, lr=cfg.lr, alpha=cfg.alpha, momentum=cfg.momentum, eps=rmsprop_torch_eps(cfg.eps), weight_decay=wd,
            foreach=True,
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps, weight_decay=wd, **fused
        )
    raise ValueError(f"unknown optimizer {cfg.name!r} (known: sgd, rmsprop, adamw)")


def l2_penalty(model: nn.Module, weight_decay: float, extra: Iterable[torch.Tensor] = ()) -> torch.Tensor:
    """``½·weight_decay·Σ w²`` over every trainable parameter with ≥ 2 dimensions plus ``extra`` tensors.

    Those are the conv (4-d) and linear/embedding (2-d) weights; BN/LN parameters and biases (1-d) are
    excluded — pass e.g. the classifier bias in ``extra`` to follow the paper's code, which includes it.
    Returns a 0-d tensor on the parameters' device (0 for a model without such parameters), differentiable.
    """
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    weights.extend(extra)
    if not weights:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return torch.zeros((), device=device)
    total = torch.stack([w.float().pow(2).sum() for w in weights]).sum()
    return 0.5 * weight_decay * total
