"""Input augmentation for distillation against a live teacher: each view is labelled by the teacher itself.

With stored soft labels an augmented image would carry the label of another image, so these apply only
when a live teacher labels every view. All functions take images in [0, 1] ``(B, 3, H, W)`` and draw
every random choice from the ``torch.Generator`` passed in.

- :func:`flip_shift`: horizontal flip and a shift of up to ``max_shift`` pixels (reflect padding). The
  shift is off by default: an inverted image's class evidence sits on the teacher's patch grid, and a shift
  of a pixel or two cuts across it (the toy teacher kept the class of 9% of its pyramid inversions under a
  diagonal 2-pixel shift, 46% of its real images), so shifted views mostly teach the teacher's answers off
  its data.
- :func:`mix_pairs`: a fraction ``mix`` of the batch (all of it by default) blended with (mixup) or
  pasted into (cutmix) another image of the batch; the teacher labels the mixture, so the student also
  learns the teacher between the corpus's images. Measured on the two tuning teachers of the quality
  suite (one seed, 1,000 steps, the same corpora): the toy teacher 38.0% with a 2-pixel shift, 45.0%
  without, 53.4% without and mixing half; the 196-patch glyph teacher 78.8%, 69.1% and 85.4%
  (BENCHMARKS.md, "Quality"). Mixing all of it at lr 1e-2 beat mixing half at 3e-3 on the toy teacher
  (three seeds, +3.0 points) and on the demo corpus (58.95% vs 40.9%).
- :func:`photometric`: per-image contrast and per-channel brightness jitter, and a random permutation of
  the colour channels. Inverted images carry the colours the optimisation happened to find, while the
  teacher's classes rarely depend on one colour; on the toy benchmark this lifted a test_resnet student
  distilled from 320 dense inversions from 34% to 65% held-out top-1 (BENCHMARKS.md).
- :func:`kd_adversarial`: one L2 step up the student-teacher KL divergence (the views where the student
  disagrees with the teacher most; adversarial belief matching), added to the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.teachers.adversarial import l2_step

Logits = Callable[[torch.Tensor], torch.Tensor]  # images in [0, 1] -> logits


@dataclass(frozen=True)
class KDAugmentConfig:
    """Which augmentations a live-teacher distillation applies (all off: the corpus images as they are)."""

    flip: bool = True  # random horizontal flip
    max_shift: int = 0  # pixels (reflect padding); 0 disables the shift
    colour_jitter: float = 0.3  # contrast factor in [1 - j, 1 + j], brightness offset in [-j/2, j/2]
    channel_shuffle: bool = True
    adversarial_eps: float = 1.0  # L2 norm (pixels in [0, 1]) of the KD ascent step; 0 disables it
    mix: float = 1.0  # fraction of each batch mixed with another of its images (half mixup, half cutmix)

    def __post_init__(self) -> None:
        if self.max_shift < 0:
            raise ValueError(f"max_shift: must be >= 0, got {self.max_shift}")
        if not 0 <= self.mix <= 1:
            raise ValueError(f"mix: must lie in [0, 1], got {self.mix}")
        if not 0 <= self.colour_jitter < 1:
            raise ValueError(f"colour_jitter: must lie in [0, 1), got {self.colour_jitter}")
        if not self.adversarial_eps >= 0:
            raise ValueError(f"adversarial_eps: must be >= 0, got {self.adversarial_eps}")


NO_AUGMENT = KDAugmentConfig(flip=False, max_shift=0, colour_jitter=0.0, channel_shuffle=False, adversarial_eps=0.0,
                             mix=0.0)


def flip_shift(images: torch.Tensor, g: torch.Generator, max_shift: int, flip: bool = True) -> torch.Tensor:
    """Random horizontal flip (if ``flip``), then a random shift of up to ``max_shift`` pixels
    (reflect-padded crop)."""
    b, _, h, w = images.shape
    if flip:
        flipped = (torch.rand(b, generator=g) < 0.5).view(b, 1, 1, 1).to(images.device)
        images = torch.where(flipped, images.flip(-1), images)
    if max_shift == 0:
        return images
    padded = F.pad(images, (max_shift,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=g).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


def mix_pairs(images: torch.Tensor, g: torch.Generator, fraction: float) -> torch.Tensor:
    """Each image, with probability ``fraction``, mixed with a random image of the batch (possibly itself):
    half of them blended ``lam * x + (1 - lam) * y`` (mixup), half with a box of area ``1 - lam`` of ``y``
    pasted in (cutmix, box clipped at the border), ``lam ~ U(0, 1)`` per image."""
    b, _, h, w = images.shape
    device = images.device
    perm = torch.randperm(b, generator=g).to(device)
    u = torch.rand(b, 5, generator=g).to(device)  # chosen, cutmix, lam, box centre y, x
    lam = u[:, 2].view(b, 1, 1, 1)
    box_h, box_w = ((1 - u[:, 2]).sqrt() * h).view(b, 1, 1), ((1 - u[:, 2]).sqrt() * w).view(b, 1, 1)
    rows, cols = torch.arange(h, device=device).view(1, h, 1), torch.arange(w, device=device).view(1, 1, w)
    centre_y, centre_x = (u[:, 3] * h).floor().view(b, 1, 1), (u[:, 4] * w).floor().view(b, 1, 1)
    box = ((rows - centre_y).abs() * 2 < box_h) & ((cols - centre_x).abs() * 2 < box_w)
    other = images[perm]
    cutmix = torch.where(box.unsqueeze(1), other, images)
    mixed = torch.where((u[:, 1] < 0.5).view(b, 1, 1, 1), cutmix, lam * images + (1 - lam) * other)
    return torch.where((u[:, 0] < fraction).view(b, 1, 1, 1), mixed, images)


def photometric(images: torch.Tensor, g: torch.Generator, jitter: float, shuffle_channels: bool) -> torch.Tensor:
    """Contrast (about mid-grey) and per-channel brightness jitter of strength ``jitter``, then an optional
    random channel permutation per image; clipped to [0, 1]."""
    b, c = images.shape[:2]
    out = images
    if jitter > 0:
        contrast = 1 + jitter * (2 * torch.rand(b, 1, 1, 1, generator=g) - 1)
        offset = 0.5 * jitter * (2 * torch.rand(b, c, 1, 1, generator=g) - 1)
        out = ((out - 0.5) * contrast.to(out.device) + 0.5 + offset.to(out.device)).clamp(0, 1)
    if shuffle_channels:
        perms = torch.argsort(torch.rand(b, c, generator=g), dim=1).to(out.device)  # (B, C) permutations
        out = torch.gather(out, 1, perms.view(b, c, 1, 1).expand_as(out))
    return out


def kd_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(teacher/T || student/T) * T^2`` averaged over the batch."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean", log_target=True,
    ) * (t * t)


def kd_adversarial(
    student: Logits, teacher: Logits, images: torch.Tensor, eps: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` moved by one L2 step of norm ``eps`` up the student-teacher KL divergence, clipped to
    [0, 1], and the teacher's logits on ``images`` (computed on the way, detached). Neither carries a
    graph; the student's parameter gradients are left untouched."""
    x = images.detach().clone().requires_grad_(True)
    teacher_logits = teacher(x)
    loss = kd_divergence(student(x), teacher_logits, temperature)
    (grad,) = torch.autograd.grad(loss, [x])
    return l2_step(images, grad, eps), teacher_logits.detach()


def augment_views(
    images: torch.Tensor,
    g: torch.Generator,
    config: KDAugmentConfig,
    *,
    student: Logits | None = None,
    teacher: Logits | None = None,
    temperature: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch of views to distil on and, given a ``teacher``, its logits on every view (else None).

    Views are (optionally mixed,) flip/shift and photometric views of ``images``, plus (with
    ``config.adversarial_eps`` > 0) their adversarial counterparts, so the batch doubles. The adversarial
    step's teacher pass on the clean views is reused as their labels, so only the adversarial half costs
    another teacher pass.
    """
    views = mix_pairs(images, g, config.mix) if config.mix > 0 else images
    views = flip_shift(views, g, config.max_shift, config.flip)
    views = photometric(views, g, config.colour_jitter, config.channel_shuffle)
    if config.adversarial_eps > 0:
        if student is None or teacher is None:
            raise ValueError("adversarial_eps > 0 needs the student and the teacher")
        moved, clean_logits = kd_adversarial(student, teacher, views, config.adversarial_eps, temperature)
        with torch.no_grad():
            labels = torch.cat([clean_logits, teacher(moved)])
        return torch.cat([views, moved]), labels
    if teacher is None:
        return views, None
    with torch.no_grad():
        return views, teacher(views)
