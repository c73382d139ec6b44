"""Distillation from the imported float model, a free teacher (method.md §4, issue 13 §4).

Two signals, both from one teacher forward on the student's own batch:
- the logits: KL at T = 4, weighted 0.9 against 0.1 for the labels (TAS, QKD). It keeps a quantized
  or substituted network close to what the trained model knew, which a few hundred steps of labels
  alone cannot restore;
- for Darkside's depthwise substitutes, a feature hint per substituted layer (FitNets): the mean
  squared gap between the supernet's output of that layer and the float model's output of the same
  layer, relative to the latter's variance so that every layer weighs alike whatever its scale. A
  depthwise conv cannot mix channels, so the logits say only late and faintly what the layers
  before it must do for its output to stand in for the conv's; the hint says it at the layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from odimo.retrain.bridge import OnnxModule
from odimo.retrain.hooks import removed_after
from odimo.retrain.mixed_layers import SubstituteLayer
from odimo.retrain.supernet import Supernet

TEMPERATURE = 4.0
LOGIT_WEIGHT = 0.9  # of the KL; the labels' cross-entropy has the rest
HINT_WEIGHT = 1.0  # of the mean relative feature gap over the substituted layers, beside the logit loss


def task_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy, or with the teacher's logits mostly the KL to them."""
    ce = F.cross_entropy(logits, labels)
    if teacher_logits is None:
        return ce
    target = F.log_softmax(teacher_logits.detach() / TEMPERATURE, dim=1)
    student = F.log_softmax(logits / TEMPERATURE, dim=1)
    kl = F.kl_div(student, target, log_target=True, reduction="batchmean") * TEMPERATURE**2
    return (1 - LOGIT_WEIGHT) * ce + LOGIT_WEIGHT * kl


class Distiller:
    """The teacher of a training run: records the student's substituted layers while it runs, then
    scores its logits and those layers against one teacher forward.

    `teacher` None gives the plain cross-entropy and records nothing.
    """

    def __init__(self, student: Supernet, teacher: OnnxModule | None, hint_weight: float | None = None) -> None:
        self.student = student
        self.teacher = teacher
        self.hint_weight = HINT_WEIGHT if hint_weight is None else hint_weight
        hinted = [m for m in student.mixed_layers() if isinstance(m, SubstituteLayer)]
        self.hinted = hinted if teacher is not None and self.hint_weight > 0 else []
        self._student_features: dict[str, torch.Tensor] = {}
        self.last_hint: float = 0.0  # the latest batch's hint loss (unweighted), for inspection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The student's logits on x, its substituted layers' outputs kept for `loss`."""
        self._student_features.clear()
        hooks = [
            m.register_forward_hook(lambda _m, _i, out, name=m.layer.node_name: self._keep(name, out))
            for m in self.hinted
        ]
        with removed_after(hooks):
            return self.student(x)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The task loss of the batch `forward` just ran on x."""
        if self.teacher is None:
            return task_loss(logits, labels)
        taught: dict[str, torch.Tensor] = {}
        hooks = [
            self.teacher.layer(name).register_forward_hook(
                lambda _m, _i, out, name=name: taught.__setitem__(name, out.detach())
            )
            for name in self._student_features
        ]
        with removed_after(hooks), torch.no_grad():
            teacher_logits = self.teacher(x)
        loss = task_loss(logits, labels, teacher_logits)
        if not self._student_features:
            return loss
        hint = torch.stack([_relative_gap(s, taught[name]) for name, s in self._student_features.items()]).mean()
        self.last_hint = float(hint.detach())
        return loss + self.hint_weight * hint

    def _keep(self, name: str, out: torch.Tensor) -> None:
        self._student_features[name] = out


def _relative_gap(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared gap over the teacher's mean per-channel variance: 1 is as far as a constant at
    the teacher's channel means, 0 is the teacher. (A per-channel ratio would blow up on channels
    that barely vary.)"""
    dims = [d for d in range(teacher.dim()) if d != 1]
    variance = teacher.var(dim=dims, unbiased=False).mean().clamp(min=1e-12)
    return ((student - teacher) ** 2).mean() / variance
