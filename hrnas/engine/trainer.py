"""The training loop shared by every task: plain training, search (progressive shrinking) and retraining.

``train(cfg, run_dir)`` builds the task's network from its spec, trains it for ``train.steps`` optimizer
steps with EMA, periodic BN-calibrated evaluation and atomic checkpoints, and — when ``search.enabled`` —
adds the resource-aware penalty and physically shrinks the network (model, optimizer state and EMA)
while training (spec §4). Runs under ``torchrun`` use DDP; every shrink decision is rank 0's, broadcast.

Files written in ``run_dir``: ``config.yaml`` (resolved), ``last.pt`` (resumable), ``best.pt`` and
``final.pt`` (inference checkpoints: calibrated EMA weights + spec + metrics), ``metrics.jsonl`` and
TensorBoard events, and for a search ``arch.json``, ``search_log.jsonl`` and ``arch.png``.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrnas.engine.bn_calibration import calibrate_bn
from hrnas.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
)
from hrnas.engine.config import RunConfig, config_to_dict, save_config
from hrnas.engine.data import eval_loader, train_batches
from hrnas.engine.optim import build_optimizer, l2_penalty
from hrnas.engine.run_log import RunLogger
from hrnas.engine.schedules import build_scheduler
from hrnas.engine.step_timer import StepTimer
from hrnas.search.units import importance_factors
from hrnas.space.cost import cost, format_macs
from hrnas.space.cost_model import MAC_COST, CostModel
from hrnas.space.network import build_model
from hrnas.space.spec import NetSpec
from hrnas.space.zoo import spec_from_dict
from hrnas.tasks.base import Task, get_task
from hrnas.utils.atomic import atomic_write_text
from hrnas.utils.distributed import (
    DistInfo,
    all_reduce_sum_,
    barrier,
    broadcast_object,
    init_distributed,
    unwrap_model,
)
from hrnas.utils.ema import ModelEma
from hrnas.utils.errors import HrnasError
from hrnas.utils.progress import progress
from hrnas.utils.signals import StopSignals, TrainingStopped
from hrnas.utils.threads import ThreadGovernor


class TrainingDiverged(HrnasError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    spec: NetSpec
    metrics: dict[str, Any]
    steps: int
    search_log: list[dict[str, Any]] = field(default_factory=list)


def _seed_everything(seed: int, deterministic: bool) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def _autocast(cfg: RunConfig, device: torch.device) -> tuple[Any, torch.amp.GradScaler | None]:
    amp = cfg.train.amp
    if device.type != "cuda" or amp == "fp32":
        return nullcontext, None
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    if amp == "auto" and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def inference_state(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to run for inference from any hrnas checkpoint (calibrated EMA when available)."""
    if payload.get("kind") == "inference":
        return payload["model"]
    return payload.get("ema", {}).get("module") or payload["model"]


def load_model_from_checkpoint(
    path: str | Path, expect_task: str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, NetSpec, dict[str, Any]]:
    """Rebuild the network of a checkpoint from its own spec (and its task's ``build_model``, when the
    checkpoint records its run config) and load its inference weights."""
    payload = load_checkpoint(path, expect_task=expect_task)
    spec = spec_from_dict(payload["spec"], source=f"{path}: spec")
    if isinstance(payload.get("run_config"), dict):
        from hrnas.engine.config import config_from_dict

        task = get_task(config_from_dict(payload["run_config"], source=f"{path}: run_config"))
        model = task.build_model(spec, init="default")
    else:
        model = build_model(spec, init="default")
    model.load_state_dict(inference_state(payload))
    return model.to(device).eval(), spec, payload


class Trainer:
    """One run. Construct, then :meth:`fit`. ``arch`` overrides ``model.spec`` (a searched spec);
    ``init_state`` initialises matching weights (``--init inherit``)."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        resume: bool = False,
        arch: NetSpec | None = None,
        init_state: dict[str, torch.Tensor] | None = None,
        show_progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist: DistInfo = init_distributed(cfg.train.device)
        self.device = self.dist.device
        self.main = self.dist.rank == 0
        self.show_progress = show_progress and self.main
        _seed_everything(cfg.train.seed, cfg.train.deterministic)
        self.task: Task = get_task(cfg)
        self.channels_last = cfg.train.channels_last
        self.autocast, self.scaler = _autocast(cfg, self.device)
        self.global_batch = cfg.data.batch_size
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.run_dir)
        barrier()

        last = self.run_dir / "last.pt"
        payload = None
        if resume:
            if not last.exists():
                raise FileNotFoundError(f"{last}: nothing to resume (no checkpoint in {self.run_dir})")
            payload = load_checkpoint(last, expect_task=cfg.task.name)
            spec = spec_from_dict(payload["spec"], source=f"{last}: spec")
        else:
            spec = arch if arch is not None else self.task.build_spec()
            if arch is not None:
                spec = self.task.build_spec(arch)
        self.spec = spec
        model = self.build_network(spec)
        if init_state is not None:
            _load_matching(model, init_state)
        self.model = self._place(model)
        self.optimizer = build_optimizer(
            self.model,
            cfg.optim,
            *((importance_factors(self.model, spec), cfg.search.factor_lr_mult) if cfg.search.enabled else ()),
        )
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.train.steps)
        self.ema = ModelEma(self.model, decay=cfg.train.ema_decay, global_batch=self.global_batch)
        self.search = None
        if cfg.search.enabled:
            from hrnas.search.controller import SearchController

            s = cfg.search
            cost_model, budget, min_saving = self._search_cost(spec)
            self.search = SearchController(
                self.model,
                spec,
                self.optimizer,
                self.ema,
                input_size=tuple(cfg.penalty_input_size),
                threshold=s.threshold,
                rho=s.rho,
                rho_free_steps=s.rho_free_steps,
                rho_warmup_steps=s.rho_warmup_steps,
                shrink_every=s.shrink_every,
                min_saving=min_saving,
                budget=budget,
                total_steps=cfg.train.steps,
                decide_on=s.decide_on,
                path_tolerance=s.path_tolerance,
                cost_model=cost_model,
            )
        self.step = 0
        self.best: float | None = None
        self.search_log: list[dict[str, Any]] = []
        self.last_metrics: dict[str, Any] = {}
        if payload is not None:
            self._restore(payload)
        if self.main:
            save_config(cfg, self.run_dir / "config.yaml")
        self.logger = RunLogger(self.run_dir, enabled=self.main)

    def build_network(self, spec: NetSpec) -> nn.Module:
        """The network trained for ``spec`` (the task's model, ``model.init`` weights). A subclass may
        train another module with the task's data, loss, metric and recipe (benchmarks/pareto.py trains
        torchvision's hand-designed nets this way); it then overrides :meth:`network_cost` too."""
        return self.task.build_model(spec, init=self.cfg.model.init)

    def network_cost(self) -> tuple[int, int]:
        """MACs and parameters of the trained network at ``penalty_input_size``."""
        c = cost(self.spec, tuple(self.cfg.penalty_input_size))
        return c.macs, c.params

    def _search_cost(self, spec: NetSpec) -> tuple[CostModel, float | None, float]:
        """The cost model, budget and minimum shrink saving of the search: MACs, or — with
        ``search.target_latency_ms`` — milliseconds from a latency table (read, or built for ``spec`` on
        rank 0 into ``latency_table.json`` and read by every rank)."""
        s = self.cfg.search
        if s.target_latency_ms is None:
            return MAC_COST, s.target_macs, float(s.min_saving_macs)
        from hrnas.space.latency import LatencyCost, LatencyTable, LatencyTableError
        from hrnas.utils.threads import available_cores

        size = tuple(self.cfg.penalty_input_size)
        threads = s.latency_threads or available_cores()
        path = Path(s.latency_table) if s.latency_table else self.run_dir / "latency_table.json"
        # one table for every process: rank 0 reads or builds it and sends it (no shared disk needed)
        data: object = None
        if self.main:
            try:
                if not s.latency_table and not path.is_file():
                    from hrnas.export.latency import MeasurementCache, Protocol, build_latency_table

                    protocol = Protocol(runtime=s.latency_runtime, threads=threads)
                    cache = MeasurementCache(protocol)
                    table = build_latency_table(spec, size, protocol, show_progress=self.show_progress, cache=cache)
                    table.save(path)
                data = LatencyTable.load(path).to_dict()
            except HrnasError as exc:
                data = exc  # every process raises it, none waits for a table that will not come
        data = broadcast_object(data)
        if isinstance(data, Exception):
            raise data
        table = LatencyTable.from_dict(data, source=str(path))
        if table.input_size != size:
            raise LatencyTableError(
                f"{path}: measured at input size {list(table.input_size)}, the search prices units at "
                f"{list(size)} (search.penalty_input_size or data.crop_size)"
            )
        mismatch = table.mismatch(s.latency_runtime, threads)
        if mismatch and self.main:
            print(f"hrnas: warning: {path}: {mismatch}", file=sys.stderr)
        cost_model = LatencyCost(table, source=str(path))
        return cost_model, s.target_latency_ms, 0.002 * cost_model.total(spec, size)

    # --- model placement ---------------------------------------------------------------------------
    def _place(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _wrapped(self) -> nn.Module:
        if self.dist.world_size > 1:
            if getattr(self, "_ddp_for", None) is not self.model:
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.device.index] if self.device.type == "cuda" else None
                self._ddp = DistributedDataParallel(self.model, device_ids=ids)
                self._ddp_for = self.model
            return self._ddp
        return self.model

    # --- checkpoints -------------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "kind": "training",
            "task": self.cfg.task.name,
            "spec": self.spec.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict(),
            "step": self.step,
            "best": self.best,
            "rng": capture_rng_state(),
            "run_config": config_to_dict(self.cfg),
            "search": None if self.search is None else self.search.state_dict(),
            "search_log": self.search_log,
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
        }

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.ema.load_state_dict(payload["ema"])
        self.step = int(payload["step"])
        self.best = payload.get("best")
        self.search_log = list(payload.get("search_log") or [])
        if self.search is not None and payload.get("search") is not None:
            self.search.load_state_dict(payload["search"], self.model)
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        restore_rng_state(payload["rng"])

    def save_last(self) -> None:
        if self.main:
            save_checkpoint(self.run_dir / "last.pt", self._payload())
        barrier()

    def _save_inference(self, name: str, model: nn.Module, metrics: dict[str, Any]) -> None:
        if not self.main:
            return
        save_checkpoint(
            self.run_dir / name,
            {
                "kind": "inference",
                "task": self.cfg.task.name,
                "spec": self.spec.to_dict(),
                "model": unwrap_model(model).state_dict(),
                "metrics": metrics,
                "step": self.step,
                "run_config": config_to_dict(self.cfg),
            },
        )

    # --- evaluation --------------------------------------------------------------------------------
    def _forward_for_calibration(self, model: nn.Module, batch: Any) -> Any:
        batch = self.task.to_device(batch, self.device, self.channels_last)
        with self.autocast():
            return self.task.forward(model, batch)

    def calibrated_ema(self) -> nn.Module:
        """A BN-calibrated copy of the EMA model (spec §4.6)."""
        model = copy.deepcopy(self.ema.module)
        n = self.cfg.train.bn_calib_batches
        if n > 0:
            batches = train_batches(
                self.task.calibration_dataset(),
                self.global_batch,
                seed=self.cfg.train.seed + 7_777_777 + self.step,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                workers=self.cfg.data.workers,
                collate=self.task.collate,
            )
            calibrate_bn(model, batches, n, forward=self._forward_for_calibration)
        return model.eval()

    def evaluate(self) -> tuple[nn.Module, dict[str, Any]]:
        model = self.calibrated_ema()
        loader = eval_loader(
            self.task.val_dataset(),
            self.cfg.data.eval_batch_size,
            self.dist.rank,
            self.dist.world_size,
            self.cfg.data.workers,
            self.task.collate,
        )
        metrics = self.task.evaluate(model, loader, self.device, progress=self.show_progress)
        macs, params = self.network_cost()
        metrics = {**metrics, "macs": macs, "params": params, "step": self.step}
        return model, metrics

    def _after_eval(self, model: nn.Module, metrics: dict[str, Any]) -> None:
        self.last_metrics = metrics
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        self.logger.log(self.step, scalars, prefix="val/")
        value = float(metrics[self.task.metric])
        better = self.best is None or (value > self.best if self.task.higher_is_better else value < self.best)
        if better and self.search is None:
            self.best = value
            self._save_inference("best.pt", model, metrics)

    # --- search ------------------------------------------------------------------------------------
    def _shrink(self, final: bool, step_time: float | None) -> None:
        assert self.search is not None
        sync = broadcast_object if self.dist.world_size > 1 else None
        result = self.search.shrink_now(self._wrapped(), self.optimizer, self.ema, self.step, final=final, sync=sync)
        record = dict(result.record)
        record["step_time_s"] = step_time
        if result.shrunk:
            from hrnas.search.shrink import rebind_scheduler

            self.spec = result.spec
            self.model = self._place(result.model)
            self.optimizer = result.optimizer
            rebind_scheduler(self.scheduler, self.optimizer)
        self.search_log.append(record)
        if self.main:
            with open(self.run_dir / "search_log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            self.spec.save(self.run_dir / "arch.json")

    # --- the loop ----------------------------------------------------------------------------------
    def _agreed_stop(self, signum: int | None) -> bool:
        """Whether any rank got a stop signal (every rank must stop at the same step to write one
        checkpoint); on a single process, whether this one did."""
        if self.dist.world_size == 1:
            return signum is not None
        flag = torch.tensor([0.0 if signum is None else 1.0], device=self.device)
        return bool(all_reduce_sum_(flag).item() > 0)

    def fit(self) -> TrainResult:
        cfg = self.cfg
        total = cfg.train.steps
        batches = train_batches(
            self.task.train_dataset(),
            self.global_batch,
            seed=cfg.train.seed,
            start_step=self.step,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            workers=cfg.data.workers,
            collate=self.task.collate,
        )
        wd = cfg.optim.weight_decay if cfg.optim.wd_mode == "l2_conv_linear" else 0.0
        bar = progress(total, desc="search" if self.search else "train", enabled=self.show_progress)
        bar.update(self.step)
        window: list[float] = []
        if self.search is not None and self.main and self.step == 0:
            (self.run_dir / "search_log.jsonl").unlink(missing_ok=True)
        governor = ThreadGovernor(enabled=self.device.type == "cpu")
        timer = StepTimer()
        with StopSignals() as stop, governor:
            while self.step < total:
                governor.tick()
                t0 = time.perf_counter()
                timer.start()
                batch = self.task.to_device(next(batches), self.device, self.channels_last)
                timer.mark("data")
                model = self._wrapped()
                model.train()
                with self.autocast():
                    output = self.task.forward(model, batch)
                    task_loss = self.task.loss(output, batch)
                timer.mark("forward")
                loss = task_loss
                penalty = None
                if self.search is not None:
                    penalty = self.search.penalty(self.model, self.step)
                    loss = loss + penalty
                if wd > 0:
                    loss = loss + l2_penalty(self.model, wd)
                timer.mark("penalty")
                if not torch.isfinite(loss.detach()).all():
                    raise TrainingDiverged(
                        f"step {self.step}: loss is {loss.item()} (task loss {task_loss.item()}); stopped, the last "
                        f"good checkpoint {self.run_dir / 'last.pt'} is kept — lower optim.lr or set optim.grad_clip"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.optimizer)
                else:
                    loss.backward()
                if cfg.optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                timer.mark("backward")
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.scheduler.step()
                timer.mark("optimizer")
                self.ema.update(self.model)
                timer.mark("ema")
                self.step += 1
                window.append(time.perf_counter() - t0)
                window = window[-20:]
                bar.update(1)
                if self.step % cfg.train.log_every == 0 or self.step == total:
                    macs = self.network_cost()[0]
                    scalars = {
                        "loss": float(task_loss.detach()),
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "step_time_s": sum(window) / len(window),
                        **timer.report(),
                    }
                    if penalty is not None:
                        scalars["penalty"] = float(penalty.detach())
                        scalars["rho"] = self.search.last_rho
                        scalars["macs"] = macs
                    self.logger.log(self.step, scalars, prefix="train/")
                    bar.set_postfix(loss=f"{scalars['loss']:.3f}", macs=format_macs(macs))
                timer.mark("bookkeeping")
                if self.search is not None and self.step < total and self.search.should_shrink(self.step):
                    self._shrink(final=False, step_time=sum(window) / len(window))
                if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and self.step < total:
                    self._after_eval(*self.evaluate())
                if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0 and self.step < total:
                    self.save_last()
                if self._agreed_stop(stop.requested):
                    self.save_last()
                    bar.close()
                    raise TrainingStopped(
                        f"stopped by {StopSignals.name(stop.requested)} at step {self.step}/{total}; resumable "
                        f"checkpoint {self.run_dir / 'last.pt'} written (continue with --resume)",
                        stop.requested,
                    )
        bar.close()
        if self.search is not None:
            self._shrink(final=True, step_time=sum(window) / len(window) if window else None)
        model, metrics = self.evaluate()
        self._after_eval(model, metrics)
        self._save_inference("final.pt", model, metrics)
        self.save_last()
        if self.main:
            self.spec.save(self.run_dir / "arch.json")
            atomic_write_text(self.run_dir / "final_metrics.json", json.dumps(metrics, indent=1) + "\n")
            if self.search is not None:
                self._plot_search()
                self._write_latency(model)
        self.logger.close()
        return TrainResult(self.run_dir, self.spec, metrics, self.step, self.search_log)

    def _write_latency(self, model: nn.Module) -> None:
        """After a latency search: ``latency.json`` with the searched network's predicted latency (the
        table's, as deployed) and its measured latency in the table's runtime and threads, next to MACs.
        For a task model that wraps the searched network (the KITTI detector), that network alone: the
        part the table prices."""
        from hrnas.space.latency import LatencyCost

        cost_model = self.search.cost_model if self.search is not None else None
        if not isinstance(cost_model, LatencyCost) or not isinstance(self.spec, NetSpec):
            return
        from hrnas.export.latency import Protocol, pad_for, time_module
        from hrnas.space.deploy import deploy

        size = tuple(self.cfg.penalty_input_size)
        meta = cost_model.table.meta
        protocol = Protocol(runtime=meta["runtime"], threads=int(meta["threads"]))
        from hrnas.search.units import as_hrnet

        # the searched network itself (a task model such as the KITTI detector wraps it as its backbone)
        network = copy.deepcopy(as_hrnet(unwrap_model(model))).to("cpu", dtype=torch.float32)
        example = torch.randn(1, self.spec.stem.in_channels, *size)
        measured = time_module(deploy(network, pad_to=pad_for(protocol)), example, protocol)
        record = {
            "target_ms": self.cfg.search.target_latency_ms,
            "predicted_ms": cost_model.deployed_total(self.spec, size),
            "measured_ms": measured,
            "macs": cost(self.spec, size).macs,
            "input_size": list(size),
            "runtime": meta["runtime"],
            "threads": meta["threads"],
            "table": cost_model.source,
        }
        atomic_write_text(self.run_dir / "latency.json", json.dumps(record, indent=1) + "\n")

    def _plot_search(self) -> None:
        try:
            from hrnas.space.plot import plot_architecture
        except ImportError:
            return
        supernet = self.task.build_spec()
        plot_architecture(
            self.spec,
            self.run_dir / "arch.png",
            supernet=supernet,
            title=f"searched for {self.cfg.task.name}",
            input_size=tuple(self.cfg.penalty_input_size),
        )


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy every tensor of ``state`` whose name and shape match ``model`` (``--init inherit``)."""
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError("--init inherit: no weight of the checkpoint matches the network")
    model.load_state_dict(matched, strict=False)


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    arch: NetSpec | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train (or search, when ``cfg.search.enabled``) and return the final spec and metrics."""
    trainer = Trainer(cfg, run_dir, resume=resume, arch=arch, init_state=init_state, show_progress=show_progress)
    return trainer.fit()


def describe_result(result: TrainResult, metric: str) -> str:
    value = result.metrics.get(metric)
    shown = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    macs, params = format_macs(result.metrics["macs"]), result.metrics["params"] / 1e6
    return f"{metric} {shown}, {macs} MACs, {params:.3f} M params"


__all__ = [
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "describe_result",
    "inference_state",
    "load_model_from_checkpoint",
    "train",
]
