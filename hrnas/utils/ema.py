"""Exponential moving average of a model's weights and BN statistics (HR-NAS spec §4.6).

A generic utility: the training loop owns and updates the average; a search replaces its shadow after
a shrink (:meth:`ModelEma.replace_module`).

The shadow is a full module copy (``copy.deepcopy``) kept in eval mode without gradients, so it can be
validated, BN-calibrated and exported like any model. After each optimizer step :meth:`ModelEma.update`
moves every floating-point parameter and buffer (BN running mean/var included) towards the model:
``shadow = d·shadow + (1 − d)·model``; integer buffers (``num_batches_tracked``) are copied.

Decay rule of the paper's code: ``d = min(0.9999^(B/4096), (1 + t)/(10 + t))`` with B the global batch
and t the number of updates already made, so the average is short while the run is young (d = 0.1 at
the first update) and converges to a decay equivalent to 0.9999 at batch 4096.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hrnas.utils.distributed import unwrap_model

__all__ = ["ModelEma", "paper_decay"]


def paper_decay(global_batch: int, base_decay: float = 0.9999, base_batch: int = 4096) -> float:
    """The batch-adjusted decay ``base_decay ** (global_batch / base_batch)`` (before the warm-up cap)."""
    if global_batch <= 0:
        raise ValueError(f"global_batch must be positive, got {global_batch}")
    return base_decay ** (global_batch / base_batch)


class ModelEma:
    """A shadow copy of a model whose weights are an exponential moving average of the model's.

    Args:
        model: the trained module (a ``DistributedDataParallel`` or ``torch.compile`` wrapper is
            unwrapped). The shadow starts as an exact copy on the same device.
        decay: fixed decay in [0, 1]; ``None`` = the paper's rule ``0.9999^(global_batch/4096)``.
        global_batch: training batch summed over all processes; required when ``decay`` is None.
        warmup_cap: cap the decay by ``(1 + t)/(10 + t)`` (t = updates done), as the paper's code does
            for both fixed and batch-adjusted decays.

    Attributes:
        module: the shadow ``nn.Module`` (eval mode, ``requires_grad=False``); evaluate this.
        num_updates: number of :meth:`update` calls so far (t).
    """

    def __init__(self, model: nn.Module, decay: float | None = None, global_batch: int | None = None,
                 warmup_cap: bool = True) -> None:
        if decay is None:
            if global_batch is None:
                raise ValueError("ModelEma needs global_batch when decay is None (the paper's rule)")
            decay = paper_decay(global_batch)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup_cap = warmup_cap
        self.num_updates = 0
        self.module = self._prepare(copy.deepcopy(unwrap_model(model)))

    @staticmethod
    def _prepare(module: nn.Module) -> nn.Module:
        module.eval()
        for param in module.parameters():
            param.requires_grad_(False)
        return module

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup_cap:
            return self.decay
        t = self.num_updates
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Move the shadow towards ``model`` (call after each optimizer step); return the decay used.

        ``model`` must have the shadow's architecture (same names and shapes); after a shrink, swap in
        the remapped shadow with :meth:`replace_module` first. Raises ``ValueError`` otherwise.
        """
        decay = self.current_decay()
        source = unwrap_model(model)
        model_state = dict(source.named_parameters())
        model_state.update(dict(source.named_buffers()))
        shadow_state = dict(self.module.named_parameters())
        shadow_state.update(dict(self.module.named_buffers()))
        if model_state.keys() != shadow_state.keys():
            missing = sorted(shadow_state.keys() - model_state.keys())[:5]
            extra = sorted(model_state.keys() - shadow_state.keys())[:5]
            raise ValueError(f"EMA shadow and model differ: missing in model {missing}, new in model {extra} "
                             "(after a shrink, call replace_module with the remapped shadow)")
        floats_shadow, floats_model = [], []
        for name, shadow in shadow_state.items():
            value = model_state[name].detach()
            if shadow.shape != value.shape:
                raise ValueError(f"EMA shadow and model differ at '{name}': {tuple(shadow.shape)} vs "
                                 f"{tuple(value.shape)} (after a shrink, call replace_module)")
            if shadow.is_floating_point():
                floats_shadow.append(shadow)
                floats_model.append(value.to(dtype=shadow.dtype, device=shadow.device))
            else:
                shadow.copy_(value)
        if floats_shadow:
            torch._foreach_lerp_(floats_shadow, floats_model, 1.0 - decay)
        self.num_updates += 1
        return decay

    def replace_module(self, new_shadow: nn.Module) -> None:
        """Use ``new_shadow`` (e.g. the shadow remapped by a shrink) as the averaged model from now on.

        The module is used as given (no copy), put in eval mode and frozen; ``num_updates`` is kept.
        """
        self.module = self._prepare(unwrap_model(new_shadow))

    def state_dict(self) -> dict[str, Any]:
        """``{"module": shadow state dict, "num_updates": int, "decay": float, "warmup_cap": bool}``."""
        return {
            "module": self.module.state_dict(),
            "num_updates": self.num_updates,
            "decay": self.decay,
            "warmup_cap": self.warmup_cap,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (strict: the shadow must already have the saved architecture)."""
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state.get("decay", self.decay))
        self.warmup_cap = bool(state.get("warmup_cap", self.warmup_cap))
