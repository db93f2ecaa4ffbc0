"""Shared evaluation for ``distill`` and ``quantize``: what a corpus says about its teacher, real held-out
images (the toy held-out split or an ImageFolder directory) mapped onto the corpus's class ids, and top-1.

Eval images are streamed in batches (an ImageFolder is never held in memory at once). Class ids are the
teacher's: an eval image of class name ``N`` gets the id the corpus gives ``N``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.checksums import file_sha256
from pipeline.corpus.index import read_manifest
from pipeline.corpus.storage import storage_for
from pipeline.errors import CorpusError, UserError
from pipeline.teachers.classify import accuracy, batches
from pipeline.teachers.loading import load_teacher
from pipeline.teachers.toy_data import CLASS_NAMES, make_toy_images

log = logging.getLogger(__name__)

TOY_EVAL_IMAGES = 2000  # size of the fixed toy held-out eval set
TOY_EVAL_SEED = 0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class CorpusInfo:
    """What training/eval needs from a corpus's manifest."""

    root: Path | str  # a local folder, or the URL of a corpus on object storage
    teacher_spec: str | None  # as recorded ("toy", "timm:NAME", a checkpoint file name)
    num_classes: int  # the teacher's class count = soft-label length = the student's head
    img_size: int
    patch_size: int | None
    mean: tuple[float, float, float] | None  # None: not recorded (old/test corpora)
    std: tuple[float, float, float] | None
    class_ids: dict[str, int]  # class name -> class id, for the classes in the corpus
    num_images: int
    teacher_resolved_id: str | None = None  # timm teachers: "timm:ARCH.TAG", the weights the corpus was made with
    teacher_sha256: str | None = None  # checkpoint teachers: the sha256 of the file the corpus was made with


def corpus_info(root: str | Path) -> CorpusInfo:
    """Read a corpus's manifest; a missing folder or one that is not a corpus is a ``CorpusError``."""
    storage = storage_for(root)
    root = storage.root  # a Path for a local corpus, the URL for object storage
    if not storage.is_dir():
        raise CorpusError(f"{root}: no such corpus folder")
    try:
        manifest = read_manifest(root)
    except CorpusError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise CorpusError(f"{root}: not a smi-synth corpus ({exc})") from None
    spec = manifest.get("spec") or {}
    teacher = spec.get("teacher")
    tdict: dict[str, Any] = teacher if isinstance(teacher, dict) else {}
    tspec = tdict.get("spec") if tdict else (teacher if isinstance(teacher, str) else None)
    num_classes = tdict.get("num_classes", spec.get("num_classes"))
    img_size = tdict.get("img_size", spec.get("image_size", spec.get("img_size")))
    if num_classes is None or img_size is None:
        raise CorpusError(f"{root}: manifest.json records no teacher class count or image size")
    if isinstance(img_size, (list, tuple)):
        img_size = img_size[0]
    patch = tdict.get("patch_size")
    if isinstance(patch, (list, tuple)):
        patch = patch[0]
    class_ids: dict[str, int] = {}
    for cid, name in zip(spec.get("classes") or [], spec.get("class_names") or []):
        class_ids[str(name)] = int(cid)
    for entry in manifest.get("shards", []):  # fallback / complement: the shard table's names
        if "class_name" in entry and "label" in entry:
            class_ids.setdefault(str(entry["class_name"]), int(entry["label"]))
    mean, std = tdict.get("mean"), tdict.get("std")
    return CorpusInfo(
        root=root,
        teacher_spec=str(tspec) if tspec is not None else None,
        num_classes=int(num_classes),
        img_size=int(img_size),
        patch_size=int(patch) if patch is not None else None,
        mean=tuple(float(m) for m in mean) if mean else None,  # type: ignore[arg-type]
        std=tuple(float(s) for s in std) if std else None,  # type: ignore[arg-type]
        class_ids=class_ids,
        num_images=sum(int(e.get("count", e.get("samples", 0))) for e in manifest.get("shards", [])),
        teacher_resolved_id=str(tdict["resolved_id"]) if tdict.get("resolved_id") else None,
        teacher_sha256=str(tdict["checkpoint_sha256"]) if tdict.get("checkpoint_sha256") else None,
    )


def load_teacher_spec(spec: str, *, device: str = "cpu") -> Any:
    """``pipeline.teachers.loading.load_teacher`` (lazy import; tests monkeypatch this), bad specs -> ``UserError``."""
    try:
        return load_teacher(spec, device=device)
    except UserError:
        raise
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"teacher {spec!r}: {exc}") from None


def resolve_recorded_teacher(info: CorpusInfo) -> str | None:
    """The corpus's own teacher as a loadable spec, or ``None`` when the manifest records none.

    A timm teacher is named with the pretrained tag it was resolved to when the corpus was made
    (``timm:NAME.TAG``), so a newer timm default does not swap the weights. A checkpoint is recorded as the
    run's manifest named it, relative to the manifest's folder (``teachers/vit.safetensors``; older corpora:
    the file name): it is looked for under the corpus folder, the corpus's parent folder (where a run's
    default output sits beside its manifest) and the working directory, and a file counts only if its
    sha256 is the recorded one. A corpus may be someone else's, so an absolute path or one that climbs out
    with ``..`` is never followed, and a checkpoint without a recorded sha256 is not loaded at all: each of
    these, and a teacher found nowhere, is a ``UserError`` naming the file (and its sha256) and saying to
    pass ``--teacher``.
    """
    spec = info.teacher_spec
    if spec is None or spec == "toy":
        return spec
    if spec.startswith("timm:"):
        resolved = info.teacher_resolved_id
        return resolved if resolved and resolved.startswith("timm:") else spec
    rel = _inside_path(spec)
    if rel is None:
        raise CorpusError(f"{_CANNOT}: manifest.json names it {spec[:200]!r}, a path outside the corpus's folders "
                          f"(not followed); {_PASS}")
    if info.teacher_sha256 is None:
        raise CorpusError(f"{_CANNOT}: manifest.json records no sha256 for {rel}, so no local file can be "
                          f"trusted to be it; {_PASS}")
    local = [info.root, info.root.parent] if isinstance(info.root, Path) else []
    for base in (*local, Path.cwd()):
        candidate = base / rel
        if candidate.is_file():
            if file_sha256(candidate) == info.teacher_sha256:
                return str(candidate)
            log.warning("%s is not the corpus's teacher (its sha256 differs from the recorded one)", candidate)
    raise UserError(f"{_CANNOT}: {rel} with sha256 {info.teacher_sha256} is not in the corpus folder, its parent "
                    f"folder or the working directory; {_PASS}")


def recorded_teacher_if_found(info: CorpusInfo) -> str | None:
    """:func:`resolve_recorded_teacher`, or ``None`` (with a warning) when it cannot be used."""
    try:
        return resolve_recorded_teacher(info)
    except UserError as exc:
        log.warning("%s", exc)
        return None


_CANNOT = "--teacher: the corpus's teacher cannot be loaded"
_PASS = "pass --teacher SPEC, or --stored-labels to learn from the corpus's stored soft labels"


def _inside_path(recorded: str) -> PurePosixPath | None:
    """``recorded`` as a relative path that stays below the folder it is joined to, else ``None``."""
    if not recorded or "\\" in recorded or "\x00" in recorded or recorded.startswith("~"):
        return None
    path = PurePosixPath(recorded)
    if path.is_absolute() or PureWindowsPath(recorded).drive or ".." in path.parts:
        return None
    return path


def eval_class_ids(info: CorpusInfo, teacher: Any | None = None) -> dict[str, int]:
    """Folder name -> class id for the corpus's classes: their names, plus the teacher's label ids
    (e.g. ImageNet WordNet synsets) when the loaded teacher has them."""
    ids = dict(info.class_ids)
    label_ids = getattr(getattr(teacher, "info", None), "label_ids", None)
    if label_ids:
        for cid in set(ids.values()):
            if 0 <= cid < len(label_ids):
                ids.setdefault(str(label_ids[cid]), cid)
    return ids


def default_eval_spec(teacher_spec: str | None, class_ids: dict[str, int]) -> str | None:
    """No ``--eval``: the toy held-out split for a toy-teacher corpus with toy classes, else no evaluation."""
    if teacher_spec != "toy":
        return None

    return "toy" if any(n in class_ids for n in CLASS_NAMES) else None


# ---------------------------------------------------------------------------------------------- eval data


@dataclass
class EvalSet:
    """Held-out images as a batch stream: ``batches(n)`` yields (images (B,3,H,W) in [0,1], labels (B,))."""

    name: str
    num_images: int
    _items: list[tuple[Path, int]] | None = None  # ImageFolder files
    _tensors: tuple[torch.Tensor, torch.Tensor] | None = None  # toy split
    img_size: int = 32

    @classmethod
    def from_tensors(cls, name: str, images: torch.Tensor, labels: torch.Tensor) -> EvalSet:
        """Held-out images already in memory: ``(N, 3, S, S)`` in [0, 1] and their class ids ``(N,)``."""
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected (N, 3, S, S) images and N labels, got {tuple(images.shape)} and {len(labels)}")
        return cls(name, len(labels), _tensors=(images, labels.to(torch.int64)), img_size=int(images.shape[-1]))

    def batches(self, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._tensors is not None:
            yield from batches(*self._tensors, batch_size)
            return
        items = self._items or []
        for lo in range(0, len(items), batch_size):
            chunk = items[lo : lo + batch_size]
            images = torch.stack([_read_image(p, self.img_size) for p, _ in chunk])
            yield images, torch.tensor([lab for _, lab in chunk], dtype=torch.int64)


def _read_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def eval_source(
    spec: str | None, *, class_ids: dict[str, int], img_size: int, toy_images: int = TOY_EVAL_IMAGES
) -> EvalSet | None:
    """Resolve ``--eval``: ``None`` -> ``None``; ``"toy"`` -> the toy held-out split (fixed seed) restricted to
    the corpus's classes; else an ImageFolder root whose class folders must all be corpus class names."""
    if spec is None:
        return None
    if spec == "toy":
        mapping = {i: class_ids[n] for i, n in enumerate(CLASS_NAMES) if n in class_ids}
        if not mapping:
            raise UserError("--eval toy: the corpus has none of the toy classes (" + ", ".join(CLASS_NAMES) + ")")
        images, labels = make_toy_images(toy_images, TOY_EVAL_SEED, image_size=img_size, split="heldout")
        keep = torch.tensor([int(lab) in mapping for lab in labels.tolist()], dtype=torch.bool)
        images = images[keep]
        labels = torch.tensor([mapping[int(lab)] for lab in labels[keep].tolist()], dtype=torch.int64)
        return EvalSet("toy", len(labels), _tensors=(images, labels), img_size=img_size)
    root = Path(spec)
    if not root.is_dir():
        raise UserError(f"--eval: {spec!r} is neither 'toy' nor an ImageFolder directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"--eval: {root} has no class folders")
    unknown = [p.name for p in folders if p.name not in class_ids]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        known = ", ".join(sorted(class_ids)[:10])
        raise UserError(f"--eval: class folders not in the corpus: {shown} (corpus classes: {known})")
    items = [
        (f, class_ids[d.name])
        for d in folders
        for f in sorted(d.iterdir())
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise UserError(f"--eval: {root} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return EvalSet(str(root), len(items), _items=items, img_size=img_size)


# ---------------------------------------------------------------------------------------------- metrics


def top1(
    model: nn.Module,
    data: EvalSet,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: str = "cpu",
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (images resized to the model's input size when it has one,
    normalised with ``mean``/``std``; :func:`pipeline.teachers.classify.accuracy`)."""
    size = _model_img_size(model)

    def fitted() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in data.batches(batch_size):
            images = images.to(device)
            if size is not None and images.shape[-1] != size:
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
            yield images, labels

    return accuracy(model, fitted(), mean=mean, std=std, device=device)


def _model_img_size(model: nn.Module) -> int | None:
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None) if pe is not None else None
    return int(size[0]) if size is not None else None


def format_top1(value: float | None) -> str:
    """``"97.25%"``, or ``"n/a"`` when there was nothing to evaluate on."""
    return "n/a" if value is None else f"{100 * value:.2f}%"
