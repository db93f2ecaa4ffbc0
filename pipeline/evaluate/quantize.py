"""``smi-synth quantize``: post-training quantization of the corpus's teacher, calibrated on the corpus,
beside Gaussian noise and (``--real-calib``) real images of the same count.

The quantizer is :mod:`pipeline.evaluate.quant` (RepQ-ViT / PTQ4ViT-style fake quantization of a timm ViT:
searched per-channel weights, searched activation ranges at every matmul input, log-base softmax, twin-uniform
or uniform GELU output, per-channel LayerNorm outputs folded into the affine). For each bit setting
(default W8/A8, W6/A6, W4/A8, W4/A4) the teacher is quantized once per calibration set and scored on the
held-out images; the float teacher's top-1 is printed beside them.

Calibration sets: the corpus (images drawn across all classes, :func:`calibration_samples`, with the
kept-patch masks its samples record: an SMI corpus calibrates on its kept tokens only), ``N`` standard
normal images in the normalised input space (the data-free baseline), and real images from an ImageFolder
(its class folders named like the corpus's classes) that must not be the evaluation folder. ``--save DIR``
writes each corpus-calibrated model to ``DIR/<WxAy>/``; ``--load DIR`` scores such a saved model again.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.console import emit_json
from pipeline.corpus.layout import as_layout
from pipeline.corpus.loader import ShardRef, corpus_shard_refs
from pipeline.corpus.sample import decode_image, image_member, kept_mask_from_meta
from pipeline.corpus.tar_io import read_tar
from pipeline.errors import CorpusError, UserError
from pipeline.evaluate.common import (
    CorpusInfo, EvalSet, corpus_info, default_eval_spec, eval_class_ids, eval_source, format_top1, load_teacher_spec,
    resolve_recorded_teacher, top1,
)
from pipeline.evaluate.quant.io import load_quantized, save_quantized
from pipeline.evaluate.quant.model import (
    MAX_BITS, MIN_BITS, QuantSettings, QuantViT, quantize_vit, token_mask, vit_shape,
)
from pipeline.teachers.classify import normalize

log = logging.getLogger(__name__)

DEFAULT_BITS = "W8A8,W6A6,W4A8,W4A4"
DEFAULT_CALIB_IMAGES = 32  # PSAQ-ViT's calibration count


def parse_bits(text: str) -> list[tuple[int, int]]:
    """``"W8A8,W4A4"`` -> ``[(8, 8), (4, 4)]`` (UserError on anything else or bits outside [2, 8])."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        m = re.fullmatch(r"[wW](\d+)[aA](\d+)", item)
        if not m:
            raise UserError(f"--bits: expected settings like W4A8, got {item!r}")
        w, a = int(m[1]), int(m[2])
        if not (MIN_BITS <= w <= MAX_BITS and MIN_BITS <= a <= MAX_BITS):
            raise UserError(f"--bits: {item}: bits must be in [{MIN_BITS}, {MAX_BITS}]")
        out.append((w, a))
    if not out:
        raise UserError("--bits: give at least one setting, e.g. W4A4")
    return out


# --- calibration sets ------------------------------------------------------------------------------------


def _draw(root: str | Path, n: int, seed: int) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    """:func:`calibration_samples`' draw, each with its kept-patch mask ``(Gh, Gw)`` (all True in a dense corpus)."""
    layout = as_layout(root)
    by_class: dict[int, list[ShardRef]] = defaultdict(list)
    for ref in corpus_shard_refs(layout):
        if ref.label is None:
            raise CorpusError(f"{layout.root}: the manifest's shard table has no class label for {ref.name}")
        by_class[ref.label].append(ref)
    classes = sorted(by_class)
    rng = random.Random(seed)
    base, extra = divmod(n, len(classes))
    lucky = set(rng.sample(classes, extra))
    out: list[tuple[torch.Tensor, int, torch.Tensor]] = []
    for label in classes:
        quota = base + (label in lucky)
        for ref in by_class[label]:
            if quota == 0:
                break
            for key, members in read_tar(layout.storage, ref.name):
                try:
                    pixels = decode_image(members[image_member(members)])
                    mask = torch.from_numpy(kept_mask_from_meta(json.loads(members["json"])))
                except (KeyError, ValueError, TypeError) as exc:
                    raise CorpusError(f"{ref.name}: sample {key}: {exc}") from None
                out.append((torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0), int(members["cls"]), mask))
                quota -= 1
                if quota == 0:
                    break
    order = list(range(len(out)))
    rng.shuffle(order)  # batches mix classes
    return [out[i] for i in order]


def calibration_samples(root: str | Path, n: int, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    """``n`` corpus images ``(image in [0,1], label)`` drawn across all classes.

    Every class of the corpus gets ``n // C`` images and ``n % C`` classes (chosen with ``seed``) one more;
    with ``n < C``, ``n`` classes chosen with ``seed`` get one each. A class's images are the first of its
    shards, so only as many shards are read as the quotas need. Fewer than ``n`` come back only when
    the corpus has fewer images of some class.
    """
    return [(image, label) for image, label, _mask in _draw(root, n, seed)]


@dataclass
class CalibrationSet:
    """Normalised calibration images and, for a corpus, the ``(N, Gh, Gw)`` kept-patch masks its samples
    record (the activation ranges are searched on the kept tokens only; None: every token)."""

    images: torch.Tensor
    patches: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: str | torch.device) -> CalibrationSet:
        return CalibrationSet(self.images.to(device), None if self.patches is None else self.patches.to(device))


def corpus_calibration_set(root: str | Path, n: int, mean: tuple, std: tuple,
                           seed: int = 0) -> tuple[CalibrationSet, list[int]]:
    """:func:`calibration_samples`' images normalised, with their kept-patch masks, and their labels."""
    drawn = _draw(root, n, seed)
    images = normalize(torch.stack([img for img, _, _ in drawn]), mean, std)
    return CalibrationSet(images, torch.stack([mask for _, _, mask in drawn])), [label for _, label, _ in drawn]


def corpus_calibration(root: str | Path, n: int, mean: tuple, std: tuple, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """:func:`calibration_samples` normalised, in batches."""
    samples = calibration_samples(root, n)
    for lo in range(0, len(samples), batch_size):
        yield normalize(torch.stack([img for img, _ in samples[lo : lo + batch_size]]), mean, std)


def noise_calibration(n: int, img_size: int, seed: int = 0) -> torch.Tensor:
    """``n`` standard-normal images in the normalised input space (the data-free baseline), one batch."""
    return torch.randn(n, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))


def real_calibration(folder: EvalSet, n: int, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    """``n`` images of an ImageFolder spread over its classes as :func:`calibration_samples` does: images in
    [0, 1] and their class ids."""
    images, labels = map(list, zip(*((img, int(lab)) for batch, labs in folder.batches()
                                     for img, lab in zip(batch, labs))))
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        by_class[lab].append(i)
    classes = sorted(by_class)
    for idx in by_class.values():
        rng.shuffle(idx)
    base, extra = divmod(n, len(classes))
    lucky = set(rng.sample(classes, min(extra, len(classes))))
    picks = [i for c in classes for i in by_class[c][: base + (c in lucky)]]
    rng.shuffle(picks)
    return torch.stack([images[i] for i in picks]), [labels[i] for i in picks]


# --- quantize and score ------------------------------------------------------------------------------------

KeepFn = Callable[[str, QuantSettings, QuantViT, float | None], None]


def quantize_and_score(model: nn.Module, calib: Mapping[str, torch.Tensor | CalibrationSet],
                       bits: Sequence[tuple[int, int]],
                       score: Callable[[nn.Module], float | None],
                       settings: Callable[[int, int], QuantSettings] = QuantSettings,
                       keep: KeepFn | None = None) -> dict[str, dict[str, float | None]]:
    """``model`` quantized at each ``(w_bits, a_bits)`` of ``bits``, calibrated on each named set of normalised
    images, and scored: ``{"W4A4": {set name: score}}``. ``settings(w, a)`` gives the quantizer's settings;
    ``keep(set name, settings, quantized model, score)`` sees each quantized model (e.g. to save it)."""
    rows: dict[str, dict[str, float | None]] = {}
    shape = vit_shape(model)
    for w, a in bits:
        s = settings(w, a)
        row = rows.setdefault(s.label, {})
        for name, data in calib.items():
            cs = data if isinstance(data, CalibrationSet) else CalibrationSet(data)
            tokens = None if cs.patches is None else token_mask(shape, cs.patches)
            qv = quantize_vit(model, cs.images, s, tokens)
            row[name] = score(qv)
            if keep is not None:
                keep(name, s, qv, row[name])
    return rows


# --- the older single-setting API (benchmarks/quality.py) -----------------------------------------------


@dataclass
class QuantizedModel:
    """A ViT waiting for calibration; ``model`` is the quantized model once :func:`calibrate` ran."""

    source: nn.Module
    settings: QuantSettings
    model: QuantViT | None = None


def quantize_model(model: nn.Module, w_bits: int, a_bits: int) -> QuantizedModel:
    """``model`` to be quantized at ``w_bits``/``a_bits`` with the default quantizer settings."""
    return QuantizedModel(model, QuantSettings(w_bits=w_bits, a_bits=a_bits))


def calibrate(qm: QuantizedModel, batches: Iterable[torch.Tensor]) -> int:
    """Quantize ``qm.source`` calibrated on the normalised image batches; returns the image count."""
    images = torch.cat(list(batches))
    qm.model = quantize_vit(qm.source, images, qm.settings)
    return len(images)


# --- the command -----------------------------------------------------------------------------------------


def _check_disjoint(real: str, eval_spec: str | None) -> None:
    if eval_spec is None or eval_spec == "toy":
        return
    a, b = Path(real).resolve(), Path(eval_spec).resolve()
    if a == b or a in b.parents or b in a.parents:
        raise UserError(f"--real-calib: {real} overlaps the evaluation folder {eval_spec}; give disjoint images")


def _teacher_spec(args: argparse.Namespace, info: CorpusInfo) -> tuple[str, str]:
    if args.model:
        return args.model, "--model"
    spec = resolve_recorded_teacher(info)
    if spec is None:
        raise UserError(f"--model: {info.root} records no teacher; pass --model SPEC")
    return spec, "the corpus's own, from its manifest (--model SPEC to change)"


def _settings(args: argparse.Namespace, w: int, a: int) -> QuantSettings:
    return QuantSettings(w_bits=w, a_bits=a, post_ln=args.post_ln, softmax=args.softmax, gelu=args.gelu)


def _load_and_score(args: argparse.Namespace, info: CorpusInfo) -> int:
    try:
        qv, meta = load_quantized(args.load, device=args.device)
    except (ValueError, OSError, KeyError) as exc:
        raise UserError(f"--load: {exc}") from None
    if qv.shape.num_classes != info.num_classes:
        raise UserError(f"--load: the saved model has {qv.shape.num_classes} classes, the corpus has {info.num_classes}")
    eval_spec = args.eval_spec or default_eval_spec(meta.get("teacher"), info.class_ids)
    eval_set = eval_source(eval_spec, class_ids=dict(info.class_ids), img_size=qv.shape.img_size)
    mean, std = tuple(meta.get("mean", (0.5,) * 3)), tuple(meta.get("std", (0.5,) * 3))
    score = top1(qv, eval_set, mean=mean, std=std, device=args.device) if eval_set is not None else None
    report = {"loaded": str(args.load), "bits": qv.settings.label, "top1": score, "saved_top1": meta.get("top1"),
              "eval": eval_set.name if eval_set else None, "eval_images": eval_set.num_images if eval_set else 0}
    if args.json:
        emit_json(report)
    else:
        print(f"{args.load}: {qv.settings.label} top-1 {format_top1(score)}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    """Entry point of ``smi-synth quantize``."""
    bits = parse_bits(args.bits)
    if args.calib_images < 1:
        raise UserError(f"--calib-images: must be >= 1, got {args.calib_images}")
    info = corpus_info(args.out)
    if args.load:
        return _load_and_score(args, info)
    spec, why = _teacher_spec(args, info)
    teacher = load_teacher_spec(spec, device=args.device)
    if int(teacher.num_classes) != info.num_classes:
        raise UserError(f"--model: {spec} has {teacher.num_classes} classes, the corpus has {info.num_classes}")
    img_size = int(teacher.img_size[0] if isinstance(teacher.img_size, (tuple, list)) else teacher.img_size)
    if img_size != info.img_size:
        raise UserError(f"--model: {spec} takes {img_size}px images, the corpus has {info.img_size}px")
    mean, std = tuple(teacher.mean), tuple(teacher.std)
    eval_spec = args.eval_spec or default_eval_spec(spec, info.class_ids)
    class_ids = eval_class_ids(info, teacher)
    eval_set = eval_source(eval_spec, class_ids=class_ids, img_size=img_size)
    model = teacher.model.eval()
    try:
        QuantViT.from_timm(model, _settings(args, *bits[0]))
    except ValueError as exc:
        raise UserError(f"--model: {spec}: {exc}") from None

    def acc(m: nn.Module) -> float | None:
        return top1(m, eval_set, mean=mean, std=std, device=args.device) if eval_set is not None else None

    corpus, labels = corpus_calibration_set(args.out, args.calib_images, mean, std, seed=args.seed)
    calib: dict[str, torch.Tensor | CalibrationSet] = {"corpus": corpus}
    n = len(corpus)
    calib["noise"] = noise_calibration(n, img_size, seed=args.seed)
    if args.real_calib:
        _check_disjoint(args.real_calib, eval_spec)
        real = eval_source(args.real_calib, class_ids=class_ids, img_size=img_size)
        assert real is not None
        images, _ = real_calibration(real, n, seed=args.seed)
        calib["real"] = normalize(images, mean, std)
    kept = float(corpus.patches.float().mean()) if corpus.patches is not None else 1.0
    report: dict[str, Any] = {
        "model": spec, "teacher_why": why, "fp_top1": acc(model), "calib_images": n,
        "calib_classes": len(set(labels)), "seed": args.seed,
        "calibration": {k: len(v) for k, v in calib.items()},
        "corpus_kept_patches": kept,  # the share of patches the corpus calibration searches ranges on
        "quantizer": {"post_ln": args.post_ln, "softmax": args.softmax, "gelu": args.gelu},
        "eval": eval_set.name if eval_set is not None else None,
        "eval_images": eval_set.num_images if eval_set is not None else 0,
        "bits": [f"W{w}A{a}" for w, a in bits], "rows": {}, "saved": {},
    }

    def keep(name: str, settings: QuantSettings, qv: QuantViT, score: float | None) -> None:
        if name == "corpus" and args.save:
            meta = {"teacher": spec, "mean": list(mean), "std": list(std), "corpus": str(info.root),
                    "calib_images": n, "seed": args.seed, "top1": score, "eval": report["eval"]}
            report["saved"][settings.label] = str(save_quantized(qv, Path(args.save) / settings.label, meta))

    report["rows"] = quantize_and_score(model, {k: v.to(args.device) for k, v in calib.items()}, bits, acc,
                                        settings=lambda w, a: _settings(args, w, a), keep=keep)
    if args.json:
        emit_json(report)
    else:
        _print_table(report)
    return 0


def _print_table(report: dict[str, Any]) -> None:
    names = list(report["calibration"])
    print(f"teacher {report['model']} ({report['teacher_why']}); {report['calib_images']} calibration images per set "
          f"(seed {report['seed']}); eval {report['eval'] or 'none (--eval toy|DIR)'} ({report['eval_images']} images)")
    print(f"{'bits':6} {'float':>8} " + " ".join(f"{n:>8}" for n in names))
    for label, row in report["rows"].items():
        print(f"{label:6} {format_top1(report['fp_top1']):>8} " + " ".join(f"{format_top1(row[n]):>8}" for n in names))
    for label, folder in report["saved"].items():
        print(f"saved {label} (corpus-calibrated) to {folder}")
