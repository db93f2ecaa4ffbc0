"""A 3-node local Ray cluster (ray.cluster_utils.Cluster, one CPU per node) generates a small corpus
while one node is removed mid-run; prints wall time, retries (running shards re-queued), shards
re-queued from the lost worker's queue without an attempt, and shards per worker, side by side
with the same run on an intact 3-node cluster (both in this process).

    .venv/bin/python benchmarks/node_loss.py --out /tmp/node-loss
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import timm
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.console import emit_json  # noqa: E402
from pipeline.corpus.layout import CorpusLayout  # noqa: E402
from pipeline.corpus.verify import verify_corpus  # noqa: E402
from pipeline.run.runner import run_corpus  # noqa: E402
from pipeline.run.spec import load_spec  # noqa: E402
from pipeline.teachers.checkpoint import save_checkpoint  # noqa: E402

ARCH = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=4)


def manifest(out: Path) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **ARCH).eval()
    teacher = save_checkpoint(model, out / "tiny.safetensors", arch="vit_tiny_patch16_224", model_kwargs=ARCH,
                              class_names=["a", "b", "c", "d"], license="apache-2.0")
    spec = {"name": "node-loss", "teacher": str(teacher), "classes": "all", "images_per_class": 16,
            "images_per_shard": 2, "seed": 7, "device": "cpu",
            "inversion": {"method": "smi", "iterations": 200, "batch_size": 2,
                          "schedule": {"iterations": [20, 40, 80, 120], "ratios": [0.3] * 4}},
            "resources": {"workers": "auto", "cpus_per_worker": 1, "gpus_per_worker": 0}}
    path = out / "manifest.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def one_run(spec, out: Path, remove_after: int | None) -> dict:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        result: list = []

        def target() -> None:
            try:
                result.append(run_corpus(spec.with_output(out), address=cluster.address, show_progress=False))
            except Exception as exc:  # noqa: BLE001 - reported below, not swallowed
                result.append(exc)

        thread = threading.Thread(target=target)
        start = time.perf_counter()
        thread.start()
        removed_at = None
        if remove_after is not None:
            storage = CorpusLayout(out).storage
            while len(storage.listdir("stats")) < remove_after and thread.is_alive():
                time.sleep(0.1)
            cluster.remove_node(cluster.list_all_nodes()[-1])
            removed_at = time.perf_counter() - start
        thread.join()
        report = result[0]
        if isinstance(report, Exception):
            return {"ok": False, "error": f"{type(report).__name__}: {report}"}
        return {"ok": report.ok and verify_corpus(out).ok, "wall_seconds": time.perf_counter() - start,
                "node_removed_at_s": removed_at, "retries": report.retries,
                "requeued_unstarted": report.requeued_unstarted, "shards": report.completed_shards,
                "shards_per_worker": report.shards_per_worker}
    finally:
        cluster.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (two corpora are written there)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    spec = load_spec(manifest(args.out))
    intact = one_run(spec, args.out / "intact", None)
    lossy = one_run(spec, args.out / "node-lost", remove_after=8)
    print(f"intact: {intact}\nnode removed: {lossy}")
    emit_json({"intact": intact, "node_removed": lossy})
    return 0 if intact["ok"] and lossy["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
