"""The dataset card (``README.md``) of a corpus: Hub YAML metadata plus a human-readable body.

Everything comes from the corpus itself (manifest spec, stats JSON, parquet metadata), so the card is
a pure function of the corpus files: the same corpus renders byte-identical text. A run writes it when
its last shard completes; publish rewrites it with the repository id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.corpus.index import FIELDS_ADDED_LATER, complete_shard_ids, read_manifest, read_stats
from pipeline.corpus.layout import OVERVIEW_MAX_CLASSES, OVERVIEW_NAME, CorpusLayout, as_layout, shard_name
from pipeline.corpus.sample import SOFT_LABEL_MEMBER
from pipeline.corpus.tar_io import read_tar

TAGS = ["synthetic", "model-inversion", "data-free", "sparse-model-inversion", "vision-transformer",
        "knowledge-distillation", "webdataset", "smi-synth"]
PLACEHOLDER_REPO = "NS/NAME"

SMI_BIBTEX = """@inproceedings{hu2024sparse,
  title     = {Sparse Model Inversion: Efficient Inversion of Vision Transformers for Data-Free Applications},
  author    = {Hu, Zixuan and Wei, Yongxian and Shen, Li and Wang, Zhenyi and Li, Lei and Yuan, Chun and Tao, Dacheng},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning (ICML)},
  series    = {Proceedings of Machine Learning Research},
  volume    = {235},
  year      = {2024},
  url       = {https://openreview.net/forum?id=T0lFfO8HaK}
}"""


SIZE_BUCKETS = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T"]


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` examples (``n<1K``, ``1K<n<10K``, ...)."""
    k = 0
    while k < len(SIZE_BUCKETS) - 1 and n >= 1000 * 10**k:
        k += 1
    return SIZE_BUCKETS[k]


@dataclass(frozen=True)
class CorpusStats:
    """Numbers the card reports (complete shards only)."""

    shards: int
    images: int
    classes: int
    tar_bytes: int
    parquet_bytes: int
    mean_confidence: float | None
    mean_kept_patches: float | None
    mean_seconds: float | None
    image_size: tuple[int, int] | None
    made_with: tuple[tuple[str, int], ...] = ()  # (provenance line, shards) over the shards' stats


_PACKAGES = ("smi-synth", "torch", "timm", "numpy", "pillow", "pyarrow")


def provenance_line(record: dict) -> str:
    """A provenance record (stats ``provenance``) as one line: device and model, dtype, versions."""
    packages = record.get("packages") if isinstance(record.get("packages"), dict) else {}
    where = record.get("gpu") or (f"CPU {record['cpu_capability']}" if record.get("cpu_capability") else "CPU")
    versions = ", ".join(f"{n} {packages[n]}" for n in _PACKAGES if n in packages)
    extra = f", CUDA {record['cuda']}" if record.get("cuda") else ""
    return f"{record.get('device', '?')} ({where}{extra}), {record.get('dtype', '?')}; {versions}"


def corpus_stats(layout: CorpusLayout, manifest: dict) -> CorpusStats:
    """Aggregate stats JSON and parquet columns over the complete shards (one file at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = complete_shard_ids(layout, manifest)
    done_set = set(done)
    labels = {int(e["label"]) for e in manifest["shards"] if int(e["shard_id"]) in done_set}
    images = tar_bytes = parquet_bytes = 0
    sums = {"confidence": 0.0, "kept_patches": 0.0}
    counts = dict.fromkeys(sums, 0)
    image_size, seconds, timed = None, 0.0, 0
    made_with: dict[str, int] = {}
    for sid in done:
        stats = read_stats(layout, sid)
        record = stats.get("provenance")
        line = provenance_line(record) if isinstance(record, dict) else "not recorded (made before smi-synth recorded provenance)"
        made_with[line] = made_with.get(line, 0) + 1
        images += int(stats.get("samples", 0))
        tar_bytes += int(stats.get("tar_bytes", 0))
        parquet_bytes += int(stats.get("parquet_bytes", 0))
        if "generation_seconds" in stats:
            seconds += float(stats["generation_seconds"])
            timed += int(stats.get("samples", 0))
        if image_size is None and "image_size" in stats:
            image_size = (int(stats["image_size"][0]), int(stats["image_size"][1]))
        name = layout.parquet(sid)
        if not layout.storage.is_file(name):
            continue
        data = pa.BufferReader(layout.storage.read_bytes(name))
        names = set(pq.read_schema(data).names)
        table = pq.read_table(data, columns=[c for c in sums if c in names], use_threads=False)
        for col in table.column_names:
            values = [v for v in table.column(col).to_pylist() if v is not None]
            sums[col] += float(sum(values))
            counts[col] += len(values)
    mean = {c: (sums[c] / counts[c] if counts[c] else None) for c in sums}
    return CorpusStats(len(done), images, len(labels), tar_bytes, parquet_bytes, mean["confidence"],
                       mean["kept_patches"], seconds / timed if timed else None, image_size,
                       tuple(sorted(made_with.items(), key=lambda kv: (-kv[1], kv[0]))))


def _teacher(spec: dict) -> tuple[str, str | None]:
    """(teacher id, teacher licence) from a resolved spec (a dict) or a bare teacher string."""
    t = spec.get("teacher")
    if isinstance(t, dict):
        return str(t.get("id") or t.get("spec") or "unknown"), t.get("license")
    return str(t or "unknown"), None


def _provenance_rows(spec: dict, stats: CorpusStats) -> list[str]:
    """Generation-table rows on what made the corpus: resolved teacher, weights, engine, software, hardware."""
    t = spec.get("teacher") if isinstance(spec.get("teacher"), dict) else {}
    recorded = spec.get("provenance") if isinstance(spec.get("provenance"), dict) else {}
    weights = (recorded.get("teacher") or {}).get("weights_sha256") if isinstance(recorded.get("teacher"), dict) else None
    rows = []
    if t.get("resolved_id") and t.get("resolved_id") != t.get("id"):
        rows.append(f"| Teacher resolved to | `{t['resolved_id']}` (pretrained tag `{t.get('pretrained_tag')}`) |")
    rows.append(f"| Teacher weights sha256 | {f'`{weights}`' if weights else 'not recorded'} |")
    rows.append(f"| Engine version | {spec.get('engine_version', 'not recorded')} |")
    for line, shards in stats.made_with:
        rows.append(f"| Made with | {line} ({shards} shard{'s' if shards != 1 else ''}) |")
    mixed = spec.get("provenance_mismatches") or []
    if mixed:
        diffs = "; ".join(d for m in mixed for d in m.get("differences", []))
        rows.append(f"| Provenance mismatches allowed on resume | {len(mixed)}: {diffs} |")
    return rows


def _inversion(spec: dict) -> dict:
    inv = spec.get("inversion")
    return inv if isinstance(inv, dict) else {}


def _method(spec: dict) -> str:
    return str(_inversion(spec).get("method") or spec.get("method") or "unknown")


def _patches(spec: dict, layout: CorpusLayout, first_shard: int | None) -> int | None:
    """Patch tokens per image, from the spec's teacher geometry, else the first sample's patch grid."""
    t = spec.get("teacher")
    if isinstance(t, dict) and t.get("img_size") and t.get("patch_size"):
        (h, w), (ph, pw) = t["img_size"], t["patch_size"]
        return (int(h) // int(ph)) * (int(w) // int(pw))
    if first_shard is None:
        return None
    for _, members in read_tar(layout.storage, layout.tar(first_shard)):
        grid = json.loads(members.get("json", b"{}")).get("patch_grid")
        return int(grid[0]) * int(grid[1]) if grid else None
    return None


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def card_metadata(spec: dict, stats: CorpusStats) -> dict[str, Any]:
    """The YAML header as a dict (key order is the rendering order)."""
    teacher_id, _ = _teacher(spec)
    name = spec.get("name")
    pretty = f"synthetic images from {teacher_id} ({_method(spec)} inversion)"
    return {
        "license": str(spec.get("license") or "other"),
        "pretty_name": f"{name}: {pretty}" if name else pretty[0].upper() + pretty[1:],
        "task_categories": ["image-classification"],
        "task_ids": ["multi-class-image-classification"],
        "size_categories": [size_category(stats.images)],
        "annotations_creators": ["machine-generated"],
        "source_datasets": ["original"],
        "tags": list(TAGS),
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.tar"}]}],
    }


def _shard_brace(n: int) -> str:
    return f"{{{shard_name(0).split('-')[1]}..{shard_name(max(n - 1, 0)).split('-')[1]}}}"


def render_card(root: CorpusLayout | str | Path, repo_id: str | None = None, *, preview: bool | None = None,
                private: bool | None = None) -> str:
    """The full README.md text. ``repo_id`` defaults to the manifest's ``hub.repo_id``, else ``NS/NAME``.

    ``preview``: whether to show ``preview/overview.png`` (default: whether the corpus has it).
    ``private``: the visibility the corpus is published with (stated on the card; ``None``: not published).
    """
    layout = as_layout(root)
    manifest = read_manifest(layout)
    spec = manifest.get("spec") or {}
    stats = corpus_stats(layout, manifest)
    done = complete_shard_ids(layout, manifest)
    hub = spec.get("hub") if isinstance(spec.get("hub"), dict) else {}
    repo = repo_id or hub.get("repo_id") or PLACEHOLDER_REPO
    meta = card_metadata(spec, stats)
    teacher_id, teacher_license = _teacher(spec)
    inv = _inversion(spec)
    method = _method(spec)
    schedule = inv.get("schedule") if isinstance(inv.get("schedule"), dict) else None
    patches = _patches(spec, layout, done[0] if done else None)
    fmt = str(spec.get("image_format") or "png")
    header = yaml.safe_dump(meta, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)

    kept = _fmt(stats.mean_kept_patches, ".1f")
    if stats.mean_kept_patches is not None and patches:
        kept += f" of {patches} ({100 * stats.mean_kept_patches / patches:.1f}%)"
    size = f"{stats.image_size[1]}x{stats.image_size[0]}" if stats.image_size else "n/a"
    sched = "n/a"
    if method == "dense":
        sched = "none (dense: every patch evolves for the whole run)"
    elif schedule:  # corpora made before an option ran the behaviour FIELDS_ADDED_LATER records
        smi = {**FIELDS_ADDED_LATER, **inv}
        sched = (f"stop at iterations {schedule.get('iterations')} with ratios {schedule.get('ratios')}; "
                 f"patches ranked by {smi['saliency']} CLS attention; stopped pixels {smi['stopped_patches']}")
        if method == "rebirth":
            sched = (f"patch rebirth: at iterations {schedule.get('iterations')} the most salient share "
                     f"{schedule.get('ratios')} of the remaining patches (by {smi['saliency']} CLS attention) leaves "
                     "and the rest keep evolving; the image as each stop leaves it and the final image are each a "
                     "sample (one run yields one per stop plus one)")
    out = [f"---\n{header}---", "", f"# {meta['pretty_name']}", ""]
    out += [
        f"Synthetic images generated **without any real training data** by inverting the pretrained "
        f"Vision Transformer `{teacher_id}` with sparse model inversion (SMI, Hu et al., ICML 2024), "
        f"using smi-synth. Each image is optimised so that the teacher predicts its "
        f"class, while low-saliency patches are progressively stopped. Intended uses: data-free knowledge "
        f"distillation and quantization calibration.",
        "",
        "## Generation",
        "",
        "| | |",
        "|---|---|",
        f"| Teacher | `{teacher_id}` |",
        *([] if private is None else [f"| Published as | {'private' if private else 'public'} dataset |"]),
        f"| Teacher licence | {teacher_license or 'see the teacher model card'} |",
        f"| Corpus licence | {meta['license']} |",
        f"| Method | {method} |",
        f"| Iterations | {inv.get('iterations', 'n/a')} |",
        f"| Stopping schedule | {sched} |",
        f"| Batch size | {inv.get('batch_size', 'n/a')} |",
        f"| Image format | {fmt} (lossless), {size} |",
        f"| Seed | {spec.get('seed', 'n/a')} |",
        f"| Spec hash | `{manifest.get('spec_hash', 'n/a')}` |",
        f"| smi-synth version | {manifest.get('package_version', 'n/a')} |",
        *_provenance_rows(spec, stats),
        "",
        "The corpus licence covers the generated files; the teacher's own licence and terms of use may "
        "also apply to outputs derived from it.",
        "",
        "## Contents",
        "",
        "| | |",
        "|---|---|",
        f"| Classes | {stats.classes} |",
        f"| Images | {stats.images} |",
        f"| Shards | {stats.shards} (`data/train-NNNNNN.tar`, one class per shard) |",
        f"| Shard bytes | {_human_bytes(stats.tar_bytes)} |",
        f"| Metadata bytes | {_human_bytes(stats.parquet_bytes)} (`metadata/*.parquet`) |",
        "",
        "## Generation statistics",
        "",
        "| | |",
        "|---|---|",
        f"| Mean teacher confidence | {_fmt(stats.mean_confidence, '.4f')} |",
        f"| Mean kept (still evolving) patches | {kept} |",
        f"| Mean generation time per image | {_fmt(stats.mean_seconds, '.3f')} s |",
        f"| Total bytes (shards + metadata) | {_human_bytes(stats.tar_bytes + stats.parquet_bytes)} |",
        "",
    ]
    if preview if preview is not None else layout.storage.is_file(layout.preview(OVERVIEW_NAME)):
        out += ["## Preview", "",
                f"One row per class (at most {OVERVIEW_MAX_CLASSES}, evenly spaced). Dimmed, desaturated "
                "patches were stopped early by SMI; the yellow line borders the patches that kept evolving.", "",
                "![overview](preview/overview.png)", ""]
    out += [
        "## Sample format",
        "",
        "Each sample of a WebDataset shard has the key `cLLLLL-iIIIIIII` (class id, per-class index) "
        "and these members:",
        "",
        "| Member | Content |",
        "|---|---|",
        f"| `KEY.{fmt}` | the image, lossless |",
        "| `KEY.cls` | integer class id (ASCII) |",
        "| `KEY.json` | label, class_name, seed, shard, teacher, method, kept_patches (row-major patch "
        "indices still evolving at the end), patch_grid [rows, cols], final_loss, confidence |",
        f"| `KEY.{SOFT_LABEL_MEMBER}` | the teacher's logits (float16 `.npy`, no pickle) |",
        "",
        "`metadata/train-NNNNNN.parquet` has one row per sample (key, label, class_name, seed, shard, size, "
        "image sha256, kept patch count, confidence, final loss; timings are in the stats); "
        "`stats/train-NNNNNN.json` has each shard's sample count, byte size, sha256 and provenance (package "
        "versions, device, GPU model or CPU instruction set, teacher weights sha256; no host names); `manifest.json` "
        "holds the full generation spec; `shardindex.json` is a wids shard index.",
        "",
        "## Loading",
        "",
        "With `datasets` (the `data/*.tar` shards load with the WebDataset builder; columns "
        f"`{fmt}`, `cls`, `json`, `{SOFT_LABEL_MEMBER}`):",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo}", split="train")',
        f'stream = load_dataset("{repo}", split="train", streaming=True)  # no full download',
        f'image, label = ds[0]["{fmt}"], ds[0]["cls"]',
        "```",
        "",
        "With `webdataset`:",
        "",
        "```python",
        "import webdataset as wds",
        "",
        f'url = "https://huggingface.co/datasets/{repo}/resolve/main/data/train-{_shard_brace(stats.shards)}.tar"',
        f'ds = wds.WebDataset(f"pipe:curl -s -L {{url}}", shardshuffle=False).decode("pil").to_tuple("{fmt}", "cls")',
        "```",
        "",
        "With smi-synth's loader (image tensors, labels, soft labels and kept-patch masks):",
        "",
        "```bash",
        f"hf download {repo} --repo-type dataset --local-dir corpus",
        "```",
        "",
        "```python",
        "from pipeline import load_corpus",
        "",
        'ds = load_corpus("corpus", soft_labels=True, kept_mask=True)  # (image, label, soft_label, kept_mask)',
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        SMI_BIBTEX,
        "```",
        "",
    ]
    return "\n".join(out)


def write_card(root: CorpusLayout | str | Path, repo_id: str | None = None, *, private: bool | None = None) -> str:
    """Render the card, write it atomically to ``OUT/README.md`` and return its text."""
    layout = as_layout(root)
    text = render_card(layout, repo_id, private=private)
    layout.storage.write_atomic(layout.readme, text.encode("utf-8"))
    return text
