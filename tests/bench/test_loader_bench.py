"""The corpus I/O benchmark runs end to end on a tiny corpus and reports consistent counts."""

from __future__ import annotations

import json

import pytest

from pipeline.bench import loader as bench


@pytest.mark.bench  # every part of the benchmark (memory and DataLoader workers in subprocesses); the CLI test stays
def test_loader_bench_small(tmp_path, capsys):
    root = tmp_path / "corpus"
    writer = bench.bench_writer(root, images=40, size=16, content="smooth", shards=8)
    assert writer["images"] == 40 and writer["tar_bytes_per_image"] > 0
    lo = bench.bench_loader(root, repeats=1)
    assert lo["images"] == 40
    for key in ("load_corpus_images_per_s", "mixing_images_per_s", "plain_images_per_s", "ratio", "mixing_ratio"):
        assert lo[key] > 0
    mem = bench.bench_memory(root, shuffle_buffer=16)
    assert mem["images"] == 40 and mem["peak_rss_buffer_mib"] > 0
    # the raw samples a full 16-sample buffer holds: 16 samples of the 40 written, never more than all of them
    per_sample = writer["tar_bytes_per_image"]
    assert 0 < mem["raw_bytes_held_max_mib"] * 2**20 <= 40 * per_sample
    assert mem["decoded_float32_buffer_mib"] * 2**20 == 16 * 3 * 16 * 16 * 4
    dist = bench.bench_distill(root, [0, 1], batch_size=8)
    assert dist["0"]["images"] == dist["1"]["images"] == 40 and dist["1"]["images_per_s"] > 0


def test_loader_bench_cli_prints_json_last(tmp_path, capsys):
    assert bench.main(["--sizes", "16", "--images", "20", "--shards", "4", "--contents", "noise", "--repeats", "1",
                       "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["results"]["16-noise"]["loader"]["images"] == 20
