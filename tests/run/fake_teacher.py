"""A stand-in for pipeline.teachers.loading.describe_teacher, so manifest tests need no model."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UserError
from pipeline.teachers.loading import TeacherInfo


def fake_describe(spec: str) -> TeacherInfo:
    """Stand-in for pipeline.teachers.loading.describe_teacher: toy, DeiT-Base, or any existing file."""
    if spec.startswith("timm:deit_base"):
        tag = spec.partition(".")[2] or "fb_in1k"  # what timm resolves the bare name to
        return TeacherInfo(spec, 1000, [f"imagenet_{i}" for i in range(1000)], (224, 224),
                           (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "apache-2.0",
                           768, 12, 12, 4.0, (16, 16), 1, pretrained_tag=tag,
                           resolved_id=f"timm:deit_base_patch16_224.{tag}")
    if spec.startswith("timm:"):
        raise UserError(f"unknown timm model {spec[5:]!r}")
    if spec != "toy" and not Path(spec).is_file():
        raise UserError(f"checkpoint file not found: {spec}")
    return TeacherInfo("toy" if spec == "toy" else f"file:{Path(spec).name}", 10,
                       [f"toy_{i}" for i in range(10)], (32, 32), (0.5,) * 3, (0.5,) * 3, None,
                       64, 4, 4, 2.0, (4, 4), 1)
