"""Planning: a manifest's deterministic list of class shards with their seeds."""

from __future__ import annotations

import argparse
import hashlib
import math
from typing import Any, TypedDict

from pipeline.console import emit_json
from pipeline.corpus.index import ShardTask
from pipeline.run.spec import RunSpec, load_spec
from smi_core import memory
from smi_core.config import SelectionConfig
from smi_core.flops import total_flops, vit_iteration_flops
from smi_core.selection import images_per_target, tokens_per_iteration

# --- estimate assumptions (stated in every summary) ----------------------------------------------
FLOP_MODEL = ("smi_core.flops.vit_iteration_flops: per iteration, a forward of the kept patches and the backward "
              "to the pixels (linear layers 2x, attention products 3x), summed over the token schedule")
GPU_NAME = "NVIDIA H100/H200 SXM"  # the same tensor cores and clocks: one time estimate; memory differs
GPU_PEAK_FLOPS = {"bfloat16": 989.4e12, "float32": 66.9e12}  # dense tensor-core bf16 / non-tensor fp32
GPU_UTILISATION = 0.40  # ASSUMED model-FLOP utilisation: no GPU has run this engine yet (make bench-gpu measures it)
GPU_UTILISATION_SOURCE = "assumed (no GPU measurement yet; `make bench-gpu` measures images/s on a lent GPU)"
GPU_MEMORY_BYTES = {"H100 80GB": 80e9, "H200 141GB": 141e9}  # usable memory is a little less (CUDA context)
CPU_CORE_FLOPS = 50e9  # effective fp32 FLOP/s per core (measured ~70-80 GFLOP/s/core for small ViTs, AVX2)
BYTES_PER_PIXEL = {"png": 3.0, "webp": 2.8}  # lossless, high-frequency synthetic images (see summarize)
JSON_BASE_BYTES = 512  # per-sample .json without kept-patch indices
JSON_BYTES_PER_INDEX = 5  # "123, "
NPY_HEADER_BYTES = 128  # float16 soft label: 128-byte header + 2 bytes per class
PARQUET_ROW_BYTES = 96  # per row, plus 4 bytes per kept index
PARQUET_FILE_BYTES = 4096  # footer/schema per file
STATS_FILE_BYTES = 1024
TAR_END_BYTES = 10240  # end-of-archive blocks padded to tarfile's 10 KiB record


def shard_seed(global_seed: int, label: int, shard_index: int) -> int:
    """Seed of one shard: blake2b of ``(global seed, class, shard index within class)`` -> [0, 2**63)."""
    digest = hashlib.blake2b(
        f"smi-synth/shard-seed/v1:{global_seed}:{label}:{shard_index}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def plan_shards(spec: RunSpec) -> list[ShardTask]:
    """All shards, class-major then shard, ids ``0..N-1``; each is a contiguous chunk of one class.

    At most :data:`~pipeline.run.spec.MAX_SHARDS` (load_spec refuses more); :func:`summarize` needs none
    of them.
    """
    per_class, ips, ipc = spec.shards_per_class, spec.images_per_shard, spec.images_per_class
    tasks: list[ShardTask] = []
    for label, name in zip(spec.classes, spec.class_names):
        for k in range(per_class):
            first = k * ips
            count = min(ips, ipc - first)
            tasks.append(ShardTask(len(tasks), label, name, first, count, shard_seed(spec.seed, label, k)))
    return tasks


def num_patches(spec: RunSpec) -> int:
    """Patch tokens of one image (prefix tokens excluded)."""
    (h, w), (ph, pw) = spec.teacher.img_size, spec.teacher.patch_size
    return (h // ph) * (w // pw)


def _selection(spec: RunSpec, dense: bool) -> SelectionConfig:
    return SelectionConfig(kind="dense") if dense else spec.inversion_config().selection


def token_phases(spec: RunSpec, dense: bool = False) -> list[tuple[int, int]]:
    """``(iterations, kept patches)`` per phase of one inversion: the runs of the engine's per-iteration
    token counts (:func:`smi_core.selection.tokens_per_iteration`)."""
    phases: list[tuple[int, int]] = []
    for kept in tokens_per_iteration(_selection(spec, dense), num_patches(spec), spec.inversion_config().iterations):
        if phases and phases[-1][1] == kept:
            phases[-1] = (phases[-1][0] + 1, kept)
        else:
            phases.append((1, kept))
    return phases


def flops_per_image(spec: RunSpec, dense: bool = False) -> int:
    """FLOPs of inverting one image: :func:`smi_core.flops.vit_iteration_flops` of the teacher's dimensions,
    summed over the token schedule (:func:`smi_core.flops.total_flops`), shared by the images one run yields
    per target (rebirth: several)."""
    t = spec.teacher

    def per_iteration(kept: int) -> int:
        return vit_iteration_flops(kept, patch_size=t.patch_size, num_prefix_tokens=t.num_prefix_tokens,
                                   embed_dim=t.embed_dim, depth=t.depth, mlp_ratio=t.mlp_ratio,
                                   num_classes=t.num_classes)

    selection = _selection(spec, dense)
    per_target = total_flops(per_iteration, selection, num_patches(spec), spec.inversion_config().iterations, 1)
    return per_target // images_per_target(selection)


def _tar_member(size: int) -> int:
    return 512 + 512 * math.ceil(size / 512)


def sample_bytes(spec: RunSpec, label: int, kept: int) -> int:
    """Estimated bytes of one sample in its tar (4 members with headers) plus its parquet row."""
    (h, w), c = spec.teacher.img_size, spec.teacher.num_classes
    image = math.ceil(h * w * BYTES_PER_PIXEL[spec.image_format])
    members = [image, len(str(label)), JSON_BASE_BYTES + JSON_BYTES_PER_INDEX * kept, NPY_HEADER_BYTES + 2 * c]
    return sum(_tar_member(m) for m in members) + PARQUET_ROW_BYTES + 4 * kept


def vit_param_count(spec: RunSpec) -> int:
    """Parameters of a plain timm ViT of the teacher's dimensions (:func:`smi_core.memory.vit_param_count`)."""
    t = spec.teacher
    return memory.vit_param_count(img_size=t.img_size, patch_size=t.patch_size, num_prefix_tokens=t.num_prefix_tokens,
                                  embed_dim=t.embed_dim, depth=t.depth, mlp_ratio=t.mlp_ratio,
                                  num_classes=t.num_classes)


class MemoryEstimate(memory.MemoryParts):
    """:class:`smi_core.memory.MemoryParts` plus the images per call that fit each reference GPU."""

    largest_batch: dict[str, int]


def memory_estimate(spec: RunSpec, images: int | None = None) -> MemoryEstimate:
    """Peak GPU memory of one engine call with ``images`` in the teacher's forward (default
    :attr:`RunSpec.targets_per_call`) in the dense phase, by the formula of :mod:`smi_core.memory` (the
    teacher's own parameter count when known); ``largest_batch``: the most images in the forward of one call
    each of :data:`GPU_MEMORY_BYTES` holds. An estimate: ``make bench-gpu`` prints it beside the measured peak."""
    t = spec.teacher
    dims = {"img_size": t.img_size, "patch_size": t.patch_size, "num_prefix_tokens": t.num_prefix_tokens,
            "embed_dim": t.embed_dim, "depth": t.depth, "mlp_ratio": t.mlp_ratio,
            "params": t.num_params or vit_param_count(spec), "dtype": spec.dtype}
    parts = memory.inversion_memory(images=images if images is not None else spec.targets_per_call,
                                    **dims)
    one = memory.inversion_memory(images=1, **dims)
    fixed = one["weights"] + one["autocast_weight_copies"]
    largest = {gpu: max(0, int((cap - fixed) // (one["total"] - fixed))) for gpu, cap in GPU_MEMORY_BYTES.items()}
    return MemoryEstimate(**parts, largest_batch=largest)


class PlanSummary(TypedDict):
    """What ``smi-synth plan --json`` prints (all counts exact, FLOPs/bytes/hours estimates)."""

    name: str
    teacher: str
    spec_hash: str
    method: str
    classes: int
    images: int
    shards: int
    images_per_class: int
    images_per_shard: int
    shards_per_class: int
    batch_size: int
    pack_batches: int
    iterations: int
    kept_patches: list[int]
    flops: int
    flops_dense: int
    flops_per_image: int
    bytes: int
    gpu_hours: float
    gpu_memory: MemoryEstimate
    cpu_core_hours: float
    output: str
    assumptions: dict[str, Any]


def summarize(spec: RunSpec) -> PlanSummary:
    """Totals of a plan, computed arithmetically from the spec (no shard is enumerated).

    FLOPs: images x :func:`flops_per_image` (smi_core's FLOP model of a plain ViT, :data:`FLOP_MODEL`).
    Bytes: per sample, the image at ``BYTES_PER_PIXEL`` (PNG of per-pixel-noisy 224x224 images measured
    2.9-3.0 B/px, i.e. incompressible RGB; 1.7-2.1 after a 1-px blur; lossless WebP ~5% less) plus
    .cls, .json (with kept-patch indices) and float16 .npy soft label (2*C bytes), each with a 512-byte
    tar header and 512-byte padding, plus a parquet row; per shard, tar end blocks, parquet footer, stats.
    Hours: FLOPs / (peak x utilisation) of the reference GPU at the spec's dtype (the utilisation is
    assumed until a GPU measurement exists), and FLOPs / per-core CPU throughput. GPU memory: see
    :func:`memory_estimate`.
    """
    images, shards = spec.num_images, spec.num_shards
    per_image, dense_per_image = flops_per_image(spec), flops_per_image(spec, dense=True)
    phases = token_phases(spec)
    size = sum(spec.images_per_class * sample_bytes(spec, label, phases[-1][1]) for label in spec.classes)
    size += shards * (TAR_END_BYTES + PARQUET_FILE_BYTES + STATS_FILE_BYTES)
    flops = images * per_image
    gpu_rate = GPU_PEAK_FLOPS[spec.dtype] * GPU_UTILISATION
    return PlanSummary(
        name=spec.name,
        teacher=spec.teacher.teacher_id,
        spec_hash=spec.spec_hash(),
        method=spec.method,
        classes=len(spec.classes),
        images=images,
        shards=shards,
        images_per_class=spec.images_per_class,
        images_per_shard=spec.images_per_shard,
        shards_per_class=spec.shards_per_class,
        batch_size=spec.batch_size,
        pack_batches=spec.pack_batches,
        iterations=spec.manifest.inversion.iterations,
        kept_patches=[kept for _, kept in phases],
        flops=flops,
        flops_dense=images * dense_per_image,
        flops_per_image=per_image,
        bytes=size,
        gpu_hours=flops / gpu_rate / 3600,
        gpu_memory=memory_estimate(spec),
        cpu_core_hours=flops / CPU_CORE_FLOPS / 3600,
        output=str(spec.output),
        assumptions={
            "flop_model": FLOP_MODEL,
            "gpu": f"{GPU_NAME} {spec.dtype}: {GPU_PEAK_FLOPS[spec.dtype] / 1e12:.1f} TFLOP/s peak dense "
            f"x {GPU_UTILISATION:.0%} utilisation = {gpu_rate / 1e12:.1f} TFLOP/s effective",
            "gpu_effective_flops_per_s": gpu_rate,
            "gpu_utilisation": GPU_UTILISATION,
            "gpu_utilisation_source": GPU_UTILISATION_SOURCE,
            "batch_size_in_spec_hash": "batch_size (and pack_batches, compile when set) are part of the spec "
            "hash: a corpus is finished with the ones it was started with",
            "cpu_effective_flops_per_s_per_core": CPU_CORE_FLOPS,
            "image_bytes_per_pixel": BYTES_PER_PIXEL[spec.image_format],
        },
    )


def _scaled(x: float, unit: str, scales: tuple[tuple[str, float], ...]) -> str:
    for prefix, scale in scales:
        if x >= 0.1 * scale:
            return f"{x / scale:,.1f} {prefix}{unit}"
    prefix, scale = scales[-1]
    return f"{x / scale:,.3g} {prefix}{unit}"


def _flops_text(x: float) -> str:
    return _scaled(x, "FLOP", (("P", 1e15), ("T", 1e12), ("G", 1e9)))


def _hours_text(h: float) -> str:
    return f"{h:,.2f} h" if h >= 0.1 else f"{h * 3600:,.3g} s"


def _memory_text(m: MemoryEstimate, spec: RunSpec) -> str:
    scale, unit = (2**30, "GiB") if m["total"] >= 2**30 else (2**20, "MiB")
    weights = (m["weights"] + m["autocast_weight_copies"]) / scale
    return (f"~{m['total'] / scale:,.1f} {unit} per GPU, {m['images_per_call']} images in the forward of one engine "
            f"call, {spec.dtype}, dense phase (weights {weights:.2f} + activations "
            f"{(m['saved_activations'] + m['backward_working_set']) / scale:.2f} + pixels/Adam "
            f"{m['pixel_state'] / scale:.2f} {unit}; estimate)")


def _fit_text(m: MemoryEstimate) -> str:
    fits = ", ".join(f"{gpu} up to {n:,}" for gpu, n in m["largest_batch"].items())
    return (f"targets in the forward of one engine call (batch_size x pack_batches; rebirth: over the images "
            f"a target yields) that fit: {fits}; batch_size and pack_batches are in the spec hash, so a corpus "
            f"is finished with the ones it started with")


def _table(s: PlanSummary, spec: RunSpec) -> str:
    t = spec.teacher
    kept = " -> ".join(str(k) for k in s["kept_patches"])
    saving = s["flops_dense"] / s["flops"] if s["flops"] else 1.0
    rows = [
        ("teacher", f"{s['teacher']}  ({t.num_classes} classes, {t.img_size[0]}x{t.img_size[1]}, "
                    f"patch {t.patch_size[0]})"),
        ("classes", f"{s['classes']:,}"),
        ("images", f"{s['images']:,}  ({s['images_per_class']:,} per class)"),
        ("shards", f"{s['shards']:,}  ({s['shards_per_class']} per class, up to {s['images_per_shard']:,} images)"),
        ("inversion", f"{s['method']}, {s['iterations']:,} iterations, batch {s['batch_size']}"
                      + (f" x {s['pack_batches']} packed" if s["pack_batches"] > 1 else "")
                      + f", kept patches {kept}, {spec.dtype}"
                      + (f", compile {spec.inversion_config().compile}" if spec.inversion_config().compile != "off"
                         else "")),
        ("compute", f"{_flops_text(s['flops'])}  (dense {_flops_text(s['flops_dense'])}: {saving:.2f}x more)"),
        ("storage", _scaled(s["bytes"], "B", (("G", 1e9), ("M", 1e6)))),
        ("GPU time", f"{_hours_text(s['gpu_hours'])}  (at {s['assumptions']['gpu']}; utilisation "
                     f"{GPU_UTILISATION_SOURCE})"),
        ("GPU memory", _memory_text(s["gpu_memory"], spec)),
        ("GPU fit", _fit_text(s["gpu_memory"])),
        ("CPU time", f"{_hours_text(s['cpu_core_hours'])} core-time  (at {CPU_CORE_FLOPS / 1e9:.0f} GFLOP/s per core)"),
        ("output", s["output"]),
        ("spec hash", s["spec_hash"]),
    ]
    if spec.device == "cuda":  # a GPU run: CPU core-time says nothing useful
        rows = [r for r in rows if r[0] != "CPU time"]
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"plan: {s['name']}"] + [f"  {k:<{width}}  {v}" for k, v in rows])


def cmd_plan(args: argparse.Namespace) -> int:
    """``smi-synth plan MANIFEST [--json]``: print the plan's totals; writes nothing."""
    spec = load_spec(args.manifest)
    summary = summarize(spec)
    print(_table(summary, spec))
    if getattr(args, "json", False):
        emit_json(dict(summary))
    return 0
