"""The ``task:`` section of a classification run config."""

from __future__ import annotations

from dataclasses import dataclass

from hrnas.tasks.options import TaskOptions, option


@dataclass(frozen=True)
class ClassificationOptions(TaskOptions):
    """What a classification run learns.

    Attributes:
        num_classes: output classes; 0 = take them from the data (a value given must agree with it).
        label_smoothing: ε of the label-smoothed cross-entropy used for training (0.1 in the ImageNet
            recipes); validation always uses plain cross-entropy.
    """

    num_classes: int = option(0, minimum=0)
    label_smoothing: float = option(0.0, minimum=0.0, maximum=1.0)
