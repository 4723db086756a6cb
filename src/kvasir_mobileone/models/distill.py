"""Distillation from a bigger teacher (--model.teacher): the teacher answers the very batch the student trains on,
augmented view, mixup and all ("a good teacher is patient and consistent", Beyer et al. 2022), converted to the
teacher's own model input (size, mean/std, hidden pixels), and the student learns its softened answers (Hinton et al.
2015) beside the labels; on unlabeled frames, the teacher's answers alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kvasir_mobileone.images import ModelInput


@dataclass(frozen=True)
class TeacherRecord:
    """What the run keeps of its teacher (config, model_info.json, the model card)."""

    name: str  # the timm model
    source: str  # the run folder, checkpoint or weights file it came from
    sha256: str  # of that checkpoint or weights file
    image_size: int


class Teacher:
    """A frozen network and its model input. Not a submodule of the student: it is not in the student's checkpoint,
    its optimizer or its weight average (a deep copy of the student shares it)."""

    def __init__(self, network: torch.nn.Module, model_input: ModelInput, record: TeacherRecord):
        self.network = network.eval().requires_grad_(False)
        self.model_input, self.record = model_input, record
        self._visible: torch.Tensor | None = None

    def __deepcopy__(self, memo):
        return self

    def to(self, device: torch.device) -> Teacher:
        self.network.to(device)
        return self

    def teacher_batch(self, images: torch.Tensor, student: ModelInput) -> torch.Tensor:
        """The student's normalized batch as the teacher's input: back to [0, 1] pixels, resized to the teacher's
        size, its hidden pixels black, normalized with its mean/std."""
        dtype, device = torch.float32, images.device
        pixels = images.float() * torch.tensor(student.std, device=device).view(1, 3, 1, 1)
        pixels = pixels + torch.tensor(student.mean, device=device).view(1, 3, 1, 1)
        size = self.model_input.image_size
        if pixels.shape[-1] != size or pixels.shape[-2] != size:
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        hidden = self.model_input.hidden()  # its mask boxes and outside its view
        if hidden is not None:
            if self._visible is None or self._visible.device != device:
                self._visible = torch.from_numpy(~hidden).to(device, dtype)
            pixels = pixels * self._visible
        mean = torch.tensor(self.model_input.mean, device=device).view(1, 3, 1, 1)
        return (pixels - mean) / torch.tensor(self.model_input.std, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, student: ModelInput) -> torch.Tensor:
        if self.network.training:
            self.network.eval()  # Lightning puts every module in train mode at each epoch; the teacher stays frozen
        return self.network(self.teacher_batch(images, student)).float()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softened answers, times T² so its gradients keep their size (Hinton et al.)."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
