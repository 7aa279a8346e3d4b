"""KITTI 3D object detection (HR-NAS §4, kitti-spec.md): a PointPillars detector whose BEV backbone is
searched, trained, evaluated and exported through the same commands as every other task.

Data (``data.format: kitti``): the official layout under ``data.root`` read by
:class:`~hrnas.tasks.kitti.dataset.KittiDataset` — training frames with ground-truth sampling (the
database of ``data.train_split`` is built once, by rank 0, and cached under the root), flip, rotation,
scaling and point shuffling; validation frames with their raw labels. ``data.crop_size`` must be the
pillar grid ``[ny, nx]`` of ``task.point_cloud_range`` / ``task.voxel_size`` (496×432 by default): it is
the pseudo-image size at which costs and search budgets are measured. The ``task:`` section is
:class:`~hrnas.tasks.kitti.options.KittiOptions`.

Network (:func:`~hrnas.tasks.kitti.detector.build_detector`): PillarVFE → scatter → the backbone of
``model.spec`` (``pointpillars_bev``, ``hrnas_kitti_supernet``, a searched ``arch.json``) → anchor head
(Car / Pedestrian / Cyclist anchors of ``pointpillar.yaml``). The engine calls :meth:`KittiTask.forward`,
which pillarizes the batch's points on the model's device (training or test pillar cap after the
model's mode) and runs the network.

Loss: targets by the axis-aligned nearest-BEV-IoU assignment, ``cls + 2·loc + 0.2·dir`` (focal,
smooth-L1 with the sin-difference, direction CE; :func:`~hrnas.tasks.kitti.losses.detection_loss`).

Evaluation: decoding, score threshold, top-k and class-agnostic rotated NMS
(:func:`~hrnas.tasks.kitti.postprocess.postprocess`), the boxes turned into KITTI result objects with their
projected, image-clipped 2D box and alpha (:func:`~hrnas.tasks.kitti.boxes.predictions_to_kitti`), then
the official evaluation (:func:`~hrnas.tasks.kitti.eval.evaluate_kitti`) of the whole split on rank 0.
The task metric is Car moderate 3D AP (R40, percent); BEV and the other classes are logged beside it. A
frame without any point in the pillar grid gets no detections (the network would otherwise read an
all-zero pseudo-image).

Cost (:meth:`KittiTask.model_cost`, what ``hrnas cost`` and ``hrnas evaluate`` report): the whole detector,
PillarVFE + backbone + anchor head (:func:`~hrnas.tasks.kitti.cost.detector_cost`), with the backbone's
own cost beside it. Prediction (``hrnas predict --split``) writes result files and pictures for the frames
of a split; export (``hrnas export``) writes the pillar-feature network
(:func:`~hrnas.tasks.kitti.export.export_detector_onnx`); ``hrnas kitti-eval`` scores result files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from hrnas.data.images import read_image_array
from hrnas.space.cost import Cost, cost
from hrnas.space.pointpillars import PointPillarsSpec
from hrnas.space.spec import NetSpec, SpecError
from hrnas.space.zoo import resolve_spec
from hrnas.tasks.base import CostOption, ModelCost, Task, TaskCommand, TaskError, register_task
from hrnas.tasks.kitti.anchors import KITTI_ANCHOR_CLASSES, AnchorConfig, assign_targets_batch, generate_anchors
from hrnas.tasks.kitti.augment import AugmentConfig
from hrnas.tasks.kitti.boxes import predictions_to_kitti
from hrnas.tasks.kitti.cost import bev_features, detector_cost, is_detection_spec
from hrnas.tasks.kitti.dataset import KittiDataConfig, KittiDataset, collate_kitti
from hrnas.tasks.kitti.detector import build_detector
from hrnas.tasks.kitti.export import DetectorExportReport
from hrnas.tasks.kitti.formats import KittiCalib, KittiObjects, write_label
from hrnas.tasks.kitti.gt_database import GtSamplingConfig, load_or_build_gt_database
from hrnas.tasks.kitti.head import HeadOutput
from hrnas.tasks.kitti.losses import LossParts, detection_loss
from hrnas.tasks.kitti.options import KittiOptions
from hrnas.tasks.kitti.pillars import PillarConfig, pillarize_batch
from hrnas.tasks.kitti.postprocess import Detections, PostProcessConfig, postprocess

__all__ = ["CLASSES", "KittiTask", "summary_metrics"]

CLASSES: tuple[str, ...] = tuple(c.name for c in KITTI_ANCHOR_CLASSES)
"""Detected classes in label order (label ``k + 1`` is ``CLASSES[k]``): Car, Pedestrian, Cyclist."""
_STRIDES = (1, 2, 4, 8, 16, 32)


def summary_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Flat metrics of :func:`evaluate_kitti`'s results: ``{class}_{3d|bev}_moderate_r40`` per class and
    their means ``map_3d_moderate_r40`` / ``map_bev_moderate_r40`` (AP in percent)."""
    out: dict[str, float] = {}
    for metric in ("3d", "bev"):
        values = []
        for cls in CLASSES:
            value = float(results[cls][metric]["R40"][1])
            out[f"{cls.lower()}_{metric}_moderate_r40"] = value
            values.append(value)
        out[f"map_{metric}_moderate_r40"] = float(np.mean(values))
    return out


def _float_head(output: HeadOutput) -> HeadOutput:
    return HeadOutput(*(None if t is None else t.float() for t in output))


@register_task
class KittiTask(Task):
    """PointPillars detector + anchor-head loss + official KITTI AP (see the module docstring).

    Batches are :func:`~hrnas.tasks.kitti.dataset.collate_kitti` dicts; the network output is a
    :class:`~hrnas.tasks.kitti.head.HeadOutput` with ``N`` anchors per frame.
    """

    name = "kitti"
    options = KittiOptions
    data_formats = ("kitti",)
    head_kinds = ("detection",)
    metric = "car_3d_moderate_r40"
    cost_options = (
        CostOption(
            "--pillars",
            "num_pillars",
            int,
            0,
            "KITTI backbones: also count the PillarVFE's MACs for N pillars (default 0, as the published figures)",
            minimum=0,
        ),
    )

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._datasets: dict[tuple[str, bool], KittiDataset] = {}
        self._anchors: dict[tuple[int, int, str], Tensor] = {}
        self.last_loss: LossParts | None = None

    # --- configuration -----------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    @property
    def pillar_config(self) -> PillarConfig:
        """The pillar grid and caps of the ``task`` section."""
        d = self.cfg.task
        try:
            return PillarConfig(
                point_cloud_range=tuple(float(v) for v in d.point_cloud_range),  # type: ignore[arg-type]
                voxel_size=tuple(float(v) for v in d.voxel_size),  # type: ignore[arg-type]
                max_points_per_pillar=d.max_points_per_pillar,
                max_pillars_train=d.max_pillars_train,
                max_pillars_test=d.max_pillars_test,
                num_point_features=4,
            )
        except ValueError as err:
            raise TaskError(f"task: {err}") from None

    @property
    def anchor_config(self) -> AnchorConfig:
        """The reference anchors spread over ``task.point_cloud_range``."""
        return AnchorConfig(KITTI_ANCHOR_CLASSES, tuple(float(v) for v in self.cfg.task.point_cloud_range))  # type: ignore[arg-type]

    @property
    def postprocess_config(self) -> PostProcessConfig:
        d = self.cfg.task
        return PostProcessConfig(
            score_threshold=d.score_threshold,
            nms_pre_max=d.nms_pre_max,
            nms_iou_threshold=d.nms_iou_threshold,
            nms_post_max=d.nms_post_max,
        )

    @property
    def grid(self) -> tuple[int, int]:
        """``(ny, nx)``: the pseudo-image size; ``data.crop_size`` must equal it."""
        nx, ny, nz = self.pillar_config.grid_size
        if nz != 1:
            raise TaskError(
                f"task.voxel_size: the z size must cover the whole z range of task.point_cloud_range "
                f"(pillars), got {nz} cells in z"
            )
        crop = tuple(int(v) for v in self.cfg.data.crop_size)
        if crop != (ny, nx):
            raise TaskError(
                f"data.crop_size: {list(crop)}, but the pillar grid of task.point_cloud_range / "
                f"task.voxel_size is {ny}×{nx}; set data.crop_size=[{ny}, {nx}]"
            )
        return ny, nx

    def data_config(self) -> KittiDataConfig:
        """How frames become samples (classes, range, augmentation) from the ``task`` section."""
        d = self.cfg.task
        sampling = GtSamplingConfig(
            enabled=d.gt_sampling,
            db_split=self.cfg.data.train_split,
            sample_groups=dict(zip(CLASSES, (int(n) for n in d.sample_groups), strict=True)),
        )
        augment = AugmentConfig(
            gt_sampling=sampling,
            flip_axes=("x",) if d.flip else (),
            rotation_range=(-d.rotation, d.rotation),
            scaling_range=tuple(d.scaling_range),  # type: ignore[arg-type]
        )
        return KittiDataConfig(classes=CLASSES, point_cloud_range=tuple(d.point_cloud_range), augment=augment)

    def num_outputs(self) -> int:
        """Detected classes (3)."""
        return len(CLASSES)

    # --- data --------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        if self.cfg.data.format != "kitti":
            raise TaskError(f"data.format: {self.cfg.data.format!r} is not a KITTI format (kitti)")
        if not self.cfg.data.root:
            raise TaskError("data.root: not set (the folder holding ImageSets/, training/ and testing/)")
        return Path(self.cfg.data.root)

    def dataset(self, split: str, training: bool) -> KittiDataset:
        """The frames of ``split``; with ``training`` the augmented samples (database built once, by rank 0)."""
        key = (split, training)
        if key not in self._datasets:
            self.grid  # noqa: B018  (checks data.crop_size before any data is read)
            config = self.data_config()
            gs = config.augment.gt_sampling
            if training and gs.enabled:
                from hrnas.utils.distributed import barrier, get_rank

                if get_rank() == 0:
                    db_path = self.root / gs.db_path if gs.db_path is not None else None
                    load_or_build_gt_database(self.root, gs.db_split, db_path, config.num_point_features)
                barrier()
            self._datasets[key] = KittiDataset(self.root, split, training, config)
        return self._datasets[key]

    def train_dataset(self) -> Dataset:
        return self.dataset(self.cfg.data.train_split, training=True)

    def val_dataset(self) -> Dataset:
        return self.dataset(self.cfg.data.val_split, training=False)

    def collate(self, samples: list[Any]) -> Any:
        return collate_kitti(samples)

    # --- model -------------------------------------------------------------------------------------
    def build_spec(self, spec_ref: str | NetSpec | PointPillarsSpec | None = None) -> NetSpec | PointPillarsSpec:
        """The backbone spec named by ``model.spec`` (zoo name or JSON file of either kind), checked
        against the pillar grid; a NetSpec must have a ``detection`` head."""
        from dataclasses import replace

        ref = spec_ref if spec_ref is not None else self.cfg.model.spec
        m = self.cfg.model
        spec = resolve_spec(ref, transformer=m.transformer)
        name = spec.name or "spec"
        if isinstance(spec, NetSpec):
            if spec.head.kind not in self.head_kinds:
                raise TaskError(
                    f"model.spec: {name} has a {spec.head.kind} head; task 'kitti' needs a detection backbone "
                    "(pointpillars_bev, hrnas_kitti_supernet or a spec with a detection head)"
                )
            if m.activation != spec.activation:
                spec = replace(spec, activation=m.activation)
            if m.num_queries > 0:
                spec = spec.replace_blocks(
                    {p: replace(b, num_queries=m.num_queries) for p, b in spec.blocks() if b.num_queries > 0}
                )
        else:
            if self.cfg.search.enabled:
                raise TaskError(
                    f"search.enabled: {name} is a fixed PointPillars backbone with nothing to search; "
                    "search a supernet such as hrnas_kitti_supernet"
                )
            if m.activation != spec.activation:
                spec = replace(spec, activation=m.activation)
        try:
            bev_features(spec, self.grid)
        except SpecError as err:
            raise TaskError(
                f"model.spec: {name} does not fit the {self.grid[0]}×{self.grid[1]} pillar grid: {err}"
            ) from None
        return spec

    def build_model(self, spec: Any, init: str = "mnas") -> nn.Module:
        """The :class:`~hrnas.tasks.kitti.detector.PointPillarsDetector` around the backbone of ``spec``."""
        try:
            return build_detector(spec, self.pillar_config, self.anchor_config, init=init)
        except (ValueError, SpecError) as err:
            raise TaskError(f"model.spec: {spec.name or 'spec'}: {err}") from None

    @classmethod
    def claims_spec(cls, spec: Any) -> bool:
        """KITTI backbones: a :class:`~hrnas.space.pointpillars.PointPillarsSpec` or a NetSpec with a
        ``detection`` head."""
        return is_detection_spec(spec)

    @classmethod
    def model_cost(cls, spec: Any, input_size: tuple[int, int], num_pillars: int = 0, **options: Any) -> ModelCost:
        """The whole detector on an ``input_size`` ``(ny, nx)`` pillar grid: PillarVFE + backbone + anchor
        head (:func:`~hrnas.tasks.kitti.cost.detector_cost`, parts ``vfe``, ``backbone``, ``head``), and
        the backbone alone (:func:`hrnas.space.cost.cost`, the figure HR-NAS reports for the 2D part).
        ``num_pillars`` adds the VFE's per-pillar MACs (0: none, as the published figures)."""
        if options:
            raise TaskError(f"cost: task {cls.name!r} has no option {', '.join(sorted(options))}")
        size = (int(input_size[0]), int(input_size[1]))
        try:
            whole = detector_cost(spec, size, num_pillars=num_pillars)
        except SpecError as err:
            raise TaskError(f"cost: {spec.name or 'spec'}: {err}") from None
        parts = {
            group: Cost(macs, params, tuple(i for i in whole.items if i.path.split(".")[0] == group))
            for group, (macs, params) in whole.by_group().items()
        }
        return ModelCost(whole=whole, backbone=cost(spec, size), parts=parts)

    def run(self, model: nn.Module, batch: dict[str, Any]) -> tuple[HeadOutput, Tensor]:
        """Pillarize the batch (cap after ``model.training``) and run the network; also returns which
        frames had at least one pillar, ``(B,)`` bool."""
        sizes = batch["num_points"].tolist()
        clouds = list(batch["points"][:, 1:].split(sizes))
        pillars = pillarize_batch(clouds, self.pillar_config, training=model.training, name="points")
        batch_size = int(batch["batch_size"])
        output = model(pillars.voxels, pillars.num_points, pillars.coords, batch_size)
        has_pillars = torch.bincount(pillars.coords[:, 0], minlength=batch_size) > 0
        return output, has_pillars

    def forward(self, model: nn.Module, batch: Any) -> HeadOutput:
        return self.run(model, batch)[0]

    def inputs(self, batch: Any) -> Tensor:
        raise TaskError("task 'kitti' feeds pillars, not an image tensor: use KittiTask.forward")

    def anchors(self, num_anchors: int, device: torch.device) -> Tensor:
        """Anchors ``(H, W, C, R, 7)`` of a head output with ``num_anchors`` anchors per frame: the feature
        map is the grid at the backbone's output stride (found from the count)."""
        ny, nx = self.grid
        config = self.anchor_config
        for s in _STRIDES:
            h, w = -(-ny // s), -(-nx // s)
            if h * w * config.num_anchors_per_location == num_anchors:
                key = (h, w, str(device))
                if key not in self._anchors:
                    self._anchors[key] = generate_anchors(config, (h, w), device=device)
                return self._anchors[key]
        raise TaskError(
            f"the network predicts {num_anchors} anchors per frame, which is no stride of the {ny}×{nx} grid "
            f"with {config.num_anchors_per_location} anchors per location"
        )

    def loss(self, output: HeadOutput, batch: Any) -> Tensor:
        """``cls + 2·loc + 0.2·dir`` against the targets assigned to the batch's ``gt_boxes (B, M, 8)``;
        the parts are kept in :attr:`last_loss`."""
        preds = _float_head(output)
        anchors = self.anchors(preds.cls_logits.shape[1], preds.cls_logits.device)
        gt = batch["gt_boxes"]
        with torch.no_grad():
            targets = assign_targets_batch(anchors, gt[..., :7], gt[..., 7].long(), self.anchor_config)
        parts = detection_loss(preds, anchors, targets.labels, targets.box_targets)
        self.last_loss = parts
        return parts.total

    # --- inference ---------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, model: nn.Module, batch: dict[str, Any]) -> list[Detections]:
        """Detections per frame of a batch on the model's device (CPU tensors, descending score)."""
        output, has_pillars = self.run(model, batch)
        preds = _float_head(output)
        anchors = self.anchors(preds.cls_logits.shape[1], preds.cls_logits.device)
        out = []
        for frame, det in enumerate(postprocess(preds, anchors, self.postprocess_config)):
            det = Detections(*(t.cpu() for t in det))
            if not bool(has_pillars[frame]):
                det = Detections(det.boxes[:0], det.scores[:0], det.labels[:0])
            out.append(det)
        return out

    def to_kitti(self, det: Detections, calib: KittiCalib, image_shape: Sequence[int]) -> KittiObjects:
        """KITTI result objects (camera box, clipped 2D box, alpha, score) of one frame's detections."""
        names = [CLASSES[int(k) - 1] for k in det.labels.tolist()]
        return predictions_to_kitti(
            det.boxes.double().numpy(), det.scores.double().numpy(), names, calib, [int(v) for v in image_shape]
        )

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device, progress: bool = False) -> dict[str, Any]:
        """Official KITTI AP of ``model`` on the loader's frames (gathered from every process to rank 0).

        Returns :func:`summary_metrics` (``car_3d_moderate_r40`` ...), ``num_frames``, ``num_detections``
        and ``kitti``: the full :func:`~hrnas.tasks.kitti.eval.evaluate_kitti` result.
        """
        import torch.distributed as dist

        from hrnas.tasks.kitti.eval import evaluate_kitti
        from hrnas.utils.distributed import broadcast_object, get_rank, is_distributed
        from hrnas.utils.progress import progress as bar

        model.eval()
        frames: list[tuple[str, KittiObjects, KittiObjects]] = []
        for batch in bar(loader, desc="evaluate", enabled=progress, leave=False):
            batch = self.to_device(batch, device, channels_last=False)
            for b, det in enumerate(self.detect(model, batch)):
                gt = batch["annos"][b]
                if gt is None:
                    raise TaskError(f"evaluate: frame {batch['frame_id'][b]} has no label_2 file to evaluate against")
                frames.append(
                    (batch["frame_id"][b], gt, self.to_kitti(det, batch["calib"][b], batch["image_shape"][b]))
                )
        if is_distributed():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, frames)
            frames = [f for part in gathered for f in part]
        metrics = None
        if get_rank() == 0:
            if not frames:
                raise TaskError("evaluate: the validation split is empty")
            results = evaluate_kitti([g for _, g, _ in frames], [d for _, _, d in frames], CLASSES)
            metrics = {
                **summary_metrics(results),
                "num_frames": len(frames),
                "num_detections": int(sum(len(d) for _, _, d in frames)),
                "kitti": results,
            }
        return broadcast_object(metrics)

    def format_metrics(self, metrics: dict[str, Any]) -> str:
        """The official table followed by the moderate R40 summary."""
        from hrnas.tasks.kitti.eval import format_kitti_table

        lines = [format_kitti_table(metrics["kitti"]).rstrip("\n")] if metrics.get("kitti") else []
        summary = ", ".join(
            f"{cls} {metrics[f'{cls.lower()}_3d_moderate_r40']:.2f} / {metrics[f'{cls.lower()}_bev_moderate_r40']:.2f}"
            for cls in CLASSES
        )
        lines.append(f"moderate AP_R40 3D / BEV: {summary} ({metrics.get('num_frames', 0)} frames)")
        for key in ("macs", "params", "backbone_macs", "backbone_params"):
            if key in metrics:
                lines.append(f"{key}: {metrics[key]}")
        return "\n".join(lines)

    # --- prediction --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_split(
        self, model: nn.Module, split: str, out_dir: Path, progress: bool = True, max_frames: int | None = None
    ) -> list[Path]:
        """Detect every frame of ``split`` under ``data.root`` (the first ``max_frames`` when given) and
        write, per frame ``ID``:
        ``ID.txt`` (KITTI result format with the score column), ``ID_bev.png`` (points, ground truth when
        labelled, detections with heading) and ``ID_image.png`` (``image_2`` with the projected 3D boxes).
        Files are written atomically. Returns the files written."""
        import cv2

        from hrnas.tasks.kitti.vis import draw_bev, draw_camera
        from hrnas.utils.atomic import atomic_path, atomic_write_bytes
        from hrnas.utils.progress import progress as bar

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        dataset = self.dataset(split, training=False)
        device = next(model.parameters()).device
        model.eval()
        rng = self.cfg.task.point_cloud_range
        written: list[Path] = []
        count = len(dataset) if max_frames is None else min(max_frames, len(dataset))
        for index in bar(range(count), desc="predict", enabled=progress, leave=False):
            sample = dataset[index]
            batch = self.to_device(collate_kitti([sample]), device, channels_last=False)
            det = self.detect(model, batch)[0]
            frame_id = sample["frame_id"]
            objects = self.to_kitti(det, sample["calib"], sample["image_shape"])
            names = [str(n) for n in objects.name]
            result = out_dir / f"{frame_id}.txt"
            with atomic_path(result) as tmp:
                write_label(tmp, objects)
            gt = sample["gt_boxes"].numpy() if sample["annos"] is not None else None
            bev = draw_bev(sample["points"].numpy(), rng, gt, det.boxes.numpy(), names, det.scores.tolist())
            image_path = dataset.frame_files[index].image
            camera = draw_camera(read_image_array(image_path), sample["calib"], gt, det.boxes.numpy(), names)
            for suffix, picture in (("bev", bev), ("image", camera)):
                path = out_dir / f"{frame_id}_{suffix}.png"
                ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise TaskError(f"predict: could not encode {path.name}")
                atomic_write_bytes(path, png.tobytes())
                written.append(path)
            written.append(result)
        return written

    def predict(self, model: nn.Module, inputs: Sequence[str], out_dir: Path, split: str | None = None) -> list[Path]:
        """``hrnas predict``: the frames of ``split`` (default ``data.val_split``) under ``data.root``, written
        by :meth:`predict_split`. KITTI reads whole frames (points, calibration, image), not image files."""
        if inputs:
            raise TaskError(f"predict: task {self.name!r} reads dataset frames; give --split NAME, not files")
        return self.predict_split(model, split or self.cfg.data.val_split, Path(out_dir))

    def export(
        self,
        model: nn.Module,
        spec: Any,
        output: Path,
        input_size: tuple[int, int] | None = None,
        merge_groups: bool = False,
    ) -> DetectorExportReport:
        """``hrnas export``: the network part (pillar features → scatter → backbone → head), checked in ONNX
        Runtime (:func:`hrnas.tasks.kitti.export.export_detector_onnx`). Its input is pillars, whose grid
        is the config's; an ``input_size`` other than that grid is refused."""
        from hrnas.tasks.kitti.export import export_detector_onnx

        if input_size is not None and tuple(int(v) for v in input_size) != self.grid:
            raise TaskError(
                f"export: --input-size {list(input_size)}: a KITTI detector reads its {self.grid[0]}×{self.grid[1]} "
                "pillar grid (task.point_cloud_range / task.voxel_size); leave --input-size out"
            )
        return export_detector_onnx(model, output, self.pillar_config, merge_groups=merge_groups)

    @classmethod
    def cli_commands(cls) -> list[TaskCommand]:
        """``hrnas kitti-eval``: the official evaluation of result files against labels."""
        from hrnas.tasks.kitti.eval_cli import add_arguments, run

        return [
            TaskCommand("kitti-eval", "official KITTI evaluation of result files against labels", add_arguments, run)
        ]
