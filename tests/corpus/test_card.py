"""The dataset card: Hub YAML header, statistics, loading snippets, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.card import render_card, size_category, write_card

RESOLVED_SPEC = {
    "name": "toy-demo",
    "teacher": {"spec": "timm:deit_tiny_patch16_224", "id": "deit_tiny_patch16_224", "license": "apache-2.0",
                "img_size": [16, 16], "patch_size": [4, 4]},
    "classes": [0, 1, 2],
    "images_per_class": 4,
    "inversion": {"method": "smi", "iterations": 300, "batch_size": 4,
                  "schedule": {"iterations": [20, 40, 80, 120], "ratios": [0.3, 0.3, 0.3, 0.3]}},
    "image_format": "png",
    "seed": 7,
    "hub": {"repo_id": "someone/toy-demo", "private": False, "license": "cc-by-4.0"},
    "license": "cc-by-4.0",
}


def _header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _with_spec(layout: CorpusLayout, spec: dict) -> None:
    manifest = json.loads((layout.root / layout.manifest).read_text())
    manifest["spec"] = spec
    (layout.root / layout.manifest).write_text(json.dumps(manifest))


def test_yaml_header_has_every_required_key(corpus: CorpusLayout) -> None:
    meta = _header(render_card(corpus, "ns/name"))
    for key in ("license", "task_categories", "size_categories", "pretty_name", "tags", "annotations_creators",
                "configs"):
        assert key in meta, key
    assert meta["task_categories"] == ["image-classification"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["annotations_creators"] == ["machine-generated"]
    assert {"synthetic", "model-inversion", "data-free"} <= set(meta["tags"])
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.tar"}]}]
    assert isinstance(meta["pretty_name"], str) and meta["pretty_name"]


def test_card_reports_spec_and_statistics(make_corpus, tmp_path: Path) -> None:
    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=2, per_shard=2)
    _with_spec(layout, RESOLVED_SPEC)
    card = render_card(layout)
    meta = _header(card)
    assert meta["license"] == "cc-by-4.0"
    assert "toy-demo" in meta["pretty_name"]
    assert "| Teacher | `deit_tiny_patch16_224` |" in card
    assert "| Teacher licence | apache-2.0 |" in card
    assert "| Method | smi |" in card and "[20, 40, 80, 120]" in card
    assert "ranked by instant CLS attention; stopped pixels frozen |" in card  # the defaults, unrecorded
    _with_spec(layout, {**RESOLVED_SPEC, "inversion": {**RESOLVED_SPEC["inversion"], "saliency": "accumulated",
                                                       "stopped_patches": "prior"}})
    assert "ranked by accumulated CLS attention; stopped pixels prior |" in render_card(layout)
    _with_spec(layout, {**RESOLVED_SPEC, "inversion": {**RESOLVED_SPEC["inversion"], "method": "dense"}})
    assert "| Stopping schedule | none (dense" in render_card(layout)
    _with_spec(layout, RESOLVED_SPEC)
    assert "| Classes | 3 |" in card and "| Images | 12 |" in card and "| Shards | 6 " in card
    confidences = [c for p in sorted((layout.root / "metadata").glob("*.parquet"))
                   for c in pq.read_table(p).column("confidence").to_pylist()]
    assert f"| Mean teacher confidence | {sum(confidences) / len(confidences):.4f} |" in card
    assert "| Mean kept (still evolving) patches | 8.0 of 16 (50.0%) |" in card
    assert "| Mean generation time per image | 0.500 s |" in card
    assert 'load_dataset("someone/toy-demo", split="train")' in card  # the manifest's hub repo by default
    assert "streaming=True" in card and "import webdataset" in card and "load_corpus" in card
    assert "train-{000000..000005}.tar" in card
    assert "Sparse Model Inversion: Efficient Inversion of Vision Transformers for Data-Free Applications" in card
    assert "@inproceedings{hu2024sparse" in card and "ICML" in card
    assert "KEY.logits.npy" in card and "kept_patches" in card


def test_card_is_deterministic_and_written_atomically(corpus: CorpusLayout) -> None:
    first = render_card(corpus, "ns/name")
    assert render_card(corpus, "ns/name") == first
    assert write_card(corpus, "ns/name") == first
    assert (corpus.root / corpus.readme).read_text() == first
    assert not [p for p in corpus.root.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_preview_image_is_linked_only_when_present(corpus: CorpusLayout) -> None:
    assert "preview/overview.png" not in render_card(corpus)
    (corpus.root / corpus.preview_dir).mkdir()
    ((corpus.root / corpus.preview_dir) / "overview.png").write_bytes(b"png")
    assert "![overview](preview/overview.png)" in render_card(corpus)


@pytest.mark.parametrize("n, bucket", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (80_000, "10K<n<100K"),
                                       (1_000_000, "1M<n<10M"), (10**13, "n>1T")])
def test_size_categories(n: int, bucket: str) -> None:
    assert size_category(n) == bucket


def _provenance(torch_version: str, host: str) -> dict:
    return {"teacher": {"id": "timm:deit_tiny_patch16_224.fb_in1k", "weights_sha256": "5e" * 32},
            "engine_version": 1, "device": "cuda", "gpu": "NVIDIA H200", "cuda": "13.0", "dtype": "bfloat16",
            "packages": {"smi-synth": "0.1.0", "torch": torch_version, "timm": "1.0.31"}, "host": host}


def test_card_shows_provenance(make_corpus, make_samples, corpus_tasks, tmp_path: Path) -> None:
    from pipeline.corpus.writer import write_shard

    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=1, per_shard=2)
    card = render_card(layout)  # made before provenance was recorded
    assert "| Teacher weights sha256 | not recorded |" in card and "| Engine version | not recorded |" in card
    assert "| Made with | not recorded (made before smi-synth recorded provenance) (3 shards) |" in card
    first = _provenance("2.14.1+cu130", "node-a")
    for task, torch_version, host in zip(corpus_tasks(layout), ("2.14.1+cu130", "2.14.1+cu130", "2.15.0+cu130"),
                                         ("node-a", "node-b", "node-b")):
        write_shard(layout, task.shard_id, make_samples(task), num_classes=3,
                    extra_stats={"provenance": _provenance(torch_version, host)})
    teacher = {**RESOLVED_SPEC["teacher"], "id": "timm:deit_tiny_patch16_224",
               "resolved_id": "timm:deit_tiny_patch16_224.fb_in1k", "pretrained_tag": "fb_in1k"}
    mismatch = {"complete_shards_before": 2, "differences": ["packages.torch: 2.14.1+cu130 -> 2.15.0+cu130"]}
    _with_spec(layout, {**RESOLVED_SPEC, "teacher": teacher, "engine_version": 1, "provenance": first,
                        "provenance_mismatches": [mismatch]})
    card = render_card(layout)
    assert "| Teacher resolved to | `timm:deit_tiny_patch16_224.fb_in1k` (pretrained tag `fb_in1k`) |" in card
    assert f"| Teacher weights sha256 | `{'5e' * 32}` |" in card and "| Engine version | 1 |" in card
    assert ("| Made with | cuda (NVIDIA H200, CUDA 13.0), bfloat16; smi-synth 0.1.0, torch 2.14.1+cu130, "
            "timm 1.0.31 (2 shards) |") in card
    assert "torch 2.15.0+cu130, timm 1.0.31 (1 shard) |" in card
    assert "Hosts" not in card and "node-a" not in card and "node-b" not in card  # older stats named hosts
    assert ("| Provenance mismatches allowed on resume | 1: packages.torch: 2.14.1+cu130 -> 2.15.0+cu130 |"
            in card)
    assert render_card(layout) == card
