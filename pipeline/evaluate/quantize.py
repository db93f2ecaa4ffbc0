"""``smi-synth quantize``: simulated (fake-quant) post-training quantization of a ViT, calibrated on a corpus.

Weights: every ``nn.Linear`` and ``nn.Conv2d`` (the patch embedding) is quantized per output channel,
symmetric, ``w_bits`` (done once, on a copy of the model). Activations: the input of every ``nn.Linear``
is quantized per tensor, asymmetric, ``a_bits``, by a forward pre-hook whose range is calibrated on N
images. The range is the running min/max over the calibration set: at 8 bits the rounding step is
small and ViT activations carry their information in a few large-magnitude outlier channels (after the
LayerNorms and in fc2's input), so clipping them (percentile ranges) costs more than the coarser step;
min/max is also deterministic and needs no quantile over huge tensors. The same N images of Gaussian
noise (in the normalised input space) give the data-free baseline. Calibration images are drawn across
all classes of the corpus (:func:`calibration_samples`), not from the first shards a stream reaches.
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.console import emit_json
from pipeline.corpus.layout import as_layout
from pipeline.corpus.loader import ShardRef, corpus_shard_refs
from pipeline.corpus.sample import decode_image, image_member
from pipeline.corpus.tar_io import read_tar
from pipeline.errors import CorpusError, UserError
from pipeline.evaluate.common import (
    format_top1,
    corpus_info, default_eval_spec, eval_class_ids, eval_source, load_teacher_spec, top1,
)
from pipeline.teachers.classify import normalize

log = logging.getLogger(__name__)

MIN_BITS, MAX_BITS = 2, 16


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel (dim 0) fake quantization to signed ``bits``."""
    qmax = 2 ** (bits - 1) - 1
    scale = weight.detach().abs().flatten(1).amax(1).clamp(min=1e-12) / qmax
    scale = scale.view(-1, *([1] * (weight.dim() - 1)))
    return (weight / scale).round().clamp(-qmax, qmax) * scale


def fake_quant_tensor(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    """Asymmetric per-tensor fake quantization of ``x`` to ``bits`` over the range [lo, hi] (0 included)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    levels = 2**bits - 1
    scale = max(hi - lo, 1e-12) / levels
    zero = round(-lo / scale)
    q = (x / scale).round().add_(zero).clamp_(0, levels)
    return (q - zero) * scale


class ActQuant:
    """Forward pre-hook: observes the input range while calibrating, fake-quantizes it afterwards."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.lo, self.hi = float("inf"), float("-inf")
        self.calibrating = True

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple | None:
        x = inputs[0]
        if self.calibrating:
            self.lo = min(self.lo, float(x.detach().min()))
            self.hi = max(self.hi, float(x.detach().max()))
            return None
        if self.lo > self.hi:  # never saw data: leave the input alone
            return None
        return (fake_quant_tensor(x, self.lo, self.hi, self.bits), *inputs[1:])


@dataclass
class QuantizedModel:
    """A fake-quantized copy of a model and its activation quantizers."""

    model: nn.Module
    act_quants: dict[str, ActQuant]

    def finish_calibration(self) -> None:
        for q in self.act_quants.values():
            q.calibrating = False


def check_bits(w_bits: int, a_bits: int) -> None:
    for name, b in (("--w-bits", w_bits), ("--a-bits", a_bits)):
        if not MIN_BITS <= int(b) <= MAX_BITS:
            raise UserError(f"{name}: must be in [{MIN_BITS}, {MAX_BITS}], got {b}")


def quantize_model(model: nn.Module, w_bits: int, a_bits: int) -> QuantizedModel:
    """A deep copy of ``model`` with quantized Linear/Conv2d weights and calibrating input hooks on Linears."""
    check_bits(w_bits, a_bits)
    qmodel = copy.deepcopy(model).eval()
    acts: dict[str, ActQuant] = {}
    with torch.no_grad():
        for name, mod in qmodel.named_modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                mod.weight.copy_(fake_quant_weight(mod.weight, w_bits))
            if isinstance(mod, nn.Linear):
                acts[name] = ActQuant(a_bits)
                mod.register_forward_pre_hook(acts[name])
    return QuantizedModel(qmodel, acts)


@torch.no_grad()
def calibrate(qm: QuantizedModel, batches: Iterable[torch.Tensor]) -> int:
    """Run already-normalised image batches through ``qm`` to set activation ranges; returns the image count."""
    n = 0
    for images in batches:
        qm.model(images)
        n += len(images)
    qm.finish_calibration()
    return n


def calibration_samples(root: str | Path, n: int, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    """``n`` corpus images ``(image in [0,1], label)`` drawn across all classes.

    Every class of the corpus gets ``n // C`` images and ``n % C`` classes (chosen with ``seed``) one more;
    with ``n < C``, ``n`` classes chosen with ``seed`` get one each. A class's images are the first of its
    shards, so only as many shards are read as the quotas need. Fewer than ``n`` come back only when
    the corpus has fewer images of some class.
    """
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
    out: list[tuple[torch.Tensor, int]] = []
    for label in classes:
        quota = base + (label in lucky)
        for ref in by_class[label]:
            if quota == 0:
                break
            for _key, members in read_tar(layout.storage, ref.name):
                pixels = decode_image(members[image_member(members)])
                out.append((torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0), int(members["cls"])))
                quota -= 1
                if quota == 0:
                    break
    order = list(range(len(out)))
    rng.shuffle(order)  # batches mix classes (BatchNorm-free ViTs do not care, but other models might)
    return [out[i] for i in order]


def corpus_calibration(root: str | Path, n: int, mean: tuple, std: tuple, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """:func:`calibration_samples` normalised, in batches."""
    return _normalised_batches(calibration_samples(root, n), mean, std, batch_size)


def _normalised_batches(
    samples: list[tuple[torch.Tensor, int]], mean: tuple, std: tuple, batch_size: int = 64
) -> Iterator[torch.Tensor]:
    for lo in range(0, len(samples), batch_size):
        yield normalize(torch.stack([img for img, _ in samples[lo : lo + batch_size]]), mean, std)


def noise_calibration(n: int, img_size: int, seed: int = 0, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """``n`` standard-normal images in the normalised input space (the data-free baseline)."""
    g = torch.Generator().manual_seed(seed)
    for lo in range(0, n, batch_size):
        yield torch.randn(min(batch_size, n - lo), 3, img_size, img_size, generator=g)


def cmd_quantize(args: argparse.Namespace) -> int:
    """Entry point of ``smi-synth quantize``."""
    check_bits(args.w_bits, args.a_bits)
    if args.calib_images < 1:
        raise UserError(f"--calib-images: must be >= 1, got {args.calib_images}")
    info = corpus_info(args.out)
    teacher = load_teacher_spec(args.model, device=args.device)
    if int(teacher.num_classes) != info.num_classes:
        raise UserError(f"--model: {args.model} has {teacher.num_classes} classes, the corpus has {info.num_classes}")
    img_size = int(teacher.img_size[0] if isinstance(teacher.img_size, (tuple, list)) else teacher.img_size)
    if img_size != info.img_size:
        raise UserError(f"--model: {args.model} takes {img_size}px images, the corpus has {info.img_size}px")
    mean, std = tuple(teacher.mean), tuple(teacher.std)
    eval_spec = args.eval_spec or default_eval_spec(args.model, info.class_ids)
    eval_set = eval_source(eval_spec, class_ids=eval_class_ids(info, teacher), img_size=img_size)
    model = teacher.model.eval()

    def acc(m: nn.Module) -> float | None:
        return top1(m, eval_set, mean=mean, std=std, device=args.device) if eval_set is not None else None

    report: dict = {"model": args.model, "w_bits": args.w_bits, "a_bits": args.a_bits, "fp_top1": acc(model)}
    qm = quantize_model(model, args.w_bits, args.a_bits)
    samples = calibration_samples(args.out, args.calib_images)
    report["calib_classes"] = len({label for _, label in samples})
    report["calib_images"] = calibrate(qm, _normalised_batches(samples, mean, std))
    report["quant_top1"] = acc(qm.model)
    qn = quantize_model(model, args.w_bits, args.a_bits)
    calibrate(qn, noise_calibration(report["calib_images"], img_size))
    report["noise_calib_top1"] = acc(qn.model)
    report["eval"] = eval_set.name if eval_set is not None else None
    report["eval_images"] = eval_set.num_images if eval_set is not None else 0
    if args.json:
        emit_json(report)
    else:
        print(f"W{args.w_bits}A{args.a_bits}: fp {format_top1(report['fp_top1'])}, corpus-calibrated "
              f"{format_top1(report['quant_top1'])}, noise-calibrated {format_top1(report['noise_calib_top1'])} "
              f"({report['calib_images']} calibration images)")
    return 0
