"""The run command end to end on local Ray (the shared ``local_ray``) with a tiny checkpoint teacher (no toy-teacher
training). The tests that start from a complete corpus of the default manifest share one (``tiny_corpus``)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import pipeline.run.spec as spec_mod
from pipeline.cli import main
from pipeline.corpus.index import read_stats
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.verify import verify_corpus
from pipeline.run.faults import ENV_VAR
from pipeline.run.spec import load_spec
from pipeline.teachers.loading import load_teacher
from tests.cli_stderr import cli_lines
from tests.run.tiny_run import ROOT, digests, last_json, tar_digests, write_manifest

pytestmark = pytest.mark.usefixtures("local_ray")


def test_run_status_rerun_and_changed_spec(tmp_path, tiny_corpus, capsys):
    # the first run is tiny_corpus's (which also checks that it left the shared Ray without its workers)
    manifest, report = tiny_corpus.manifest, tiny_corpus.report
    assert report["ok"] and report["completed_shards"] == 8 and report["completed_images"] == 12
    out = tiny_corpus.copy(tmp_path / "out")
    assert verify_corpus(out).ok
    # the card written at completion makes the bare folder load as images, not as parquet metadata
    import datasets

    ds = datasets.load_dataset(str(out), split="train")
    assert len(ds) == 12 and {"png", "cls"} <= set(ds.column_names)
    assert sorted(ds["cls"]) == sorted([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    assert main(["status", str(out), "--json"]) == 0
    status = last_json(capsys.readouterr().out)
    assert status["complete_shards"] == 8 and status["pending_shards"] == 0 and status["images"] == 12
    before = tar_digests(out)
    # a second run finds everything complete and changes nothing
    assert main(["run", str(manifest), "--out", str(out), "--json"]) == 0
    again = last_json(capsys.readouterr().out)
    assert again["skipped_shards"] == 8 and again["completed_shards"] == 0
    assert tar_digests(out) == before
    # more workers and a fresh folder: the same bytes
    out2 = tmp_path / "out2"
    assert main(["run", str(manifest), "--out", str(out2), "--workers", "1"]) == 0
    assert tar_digests(out2) == before
    capsys.readouterr()
    # a changed spec is refused, nothing touched
    changed = write_manifest(tmp_path, tiny_corpus.teacher, images_per_class=4)
    assert main(["run", str(changed), "--out", str(out)]) == 2
    assert "different spec" in capsys.readouterr().err
    assert tar_digests(out) == before
    layout = CorpusLayout(out)
    sorted((layout.root / layout.stats_dir).glob("*.json"))[0].unlink()  # one shard loses its resume marker
    assert main(["run", str(manifest), "--out", str(out), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["completed_shards"] == 1
    assert json.loads((layout.root / layout.manifest).read_text())["spec_hash"] == load_spec(manifest).spec_hash()
    assert tar_digests(out) == before


def test_kill_9_mid_run_then_resume_is_byte_identical(tmp_path, tiny_corpus):
    manifest, reference, interrupted = tiny_corpus.manifest, tiny_corpus.out, tmp_path / "interrupted"
    # shard 3 never finishes in the run to be killed, so it is still running however fast the others go;
    # the uninterrupted reference is tiny_corpus
    env = {**os.environ, ENV_VAR: f"hang:3:1:{tmp_path / 'faults'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(interrupted)],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline, stats_dir, hung = time.time() + 120, interrupted / "stats", tmp_path / "faults" / "fired-3-0"
    try:
        while time.time() < deadline and proc.poll() is None:
            if hung.exists() and stats_dir.exists() and len(list(stats_dir.glob("*.json"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run to be killed ended on its own"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(list(stats_dir.glob("*.json")))
    assert 0 < done < 8
    assert main(["run", str(manifest), "--out", str(interrupted)]) == 0
    # data/ and metadata/ byte for byte (the parquet holds no timings); 8 tars and 8 parquet files
    expected = digests(reference, "data", "metadata")
    assert len(expected) == 16 and digests(interrupted, "data", "metadata") == expected
    assert verify_corpus(interrupted).ok


@pytest.mark.slow  # a crash on real Ray in make test: test_runner_queue.py (the state machine: test_scheduler.py)
def test_worker_crash_mid_shard_is_retried(tmp_path, teacher_file, monkeypatch, capsys):
    manifest = write_manifest(tmp_path, teacher_file)
    monkeypatch.setenv("SMI_SYNTH_INJECT_FAULT", f"crash:3:1:{tmp_path / 'faults'}")
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--out", str(out), "--json"]) == 0
    report = last_json(capsys.readouterr().out)
    assert report["ok"] and report["completed_shards"] == 8
    assert (tmp_path / "faults" / "fired-3-0").exists()  # the crash really happened
    assert verify_corpus(out).ok


def test_shard_that_always_fails_is_reported_and_the_rest_finish(tmp_path, teacher_file, monkeypatch, capsys):
    manifest = write_manifest(tmp_path, teacher_file)
    monkeypatch.setenv("SMI_SYNTH_INJECT_FAULT", f"raise:2:always:{tmp_path / 'faults'}")
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--out", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    report = last_json(captured.out)
    assert report["failed_shards"] == [2] and report["completed_shards"] == 7
    assert "injected fault" in report["failures"]["2"]
    layout = CorpusLayout(out)
    assert not (layout.root / layout.stats(2)).exists() and not (layout.root / layout.tar(2)).exists()
    assert all((layout.root / layout.stats(i)).exists() for i in range(8) if i != 2)


def test_provenance_mismatch_on_resume_is_refused_then_allowed_and_recorded(tmp_path, tiny_corpus, capsys,
                                                                          monkeypatch):
    manifest, out = tiny_corpus.manifest, tiny_corpus.copy(tmp_path / "out")
    path = out / "manifest.json"
    recorded = json.loads(path.read_text())
    reference = recorded["spec"]["provenance"]
    assert reference["packages"]["torch"] == torch.__version__ and reference["device"] == "cpu"
    assert reference["teacher"]["weights_sha256"] == load_teacher(str(tiny_corpus.teacher)).weights_sha256
    assert read_stats(CorpusLayout(out), 0)["provenance"] == reference  # one machine: the same record
    # the corpus was started under another torch and smi-synth, as an upgrade between two runs leaves it
    reference["packages"]["torch"] = "2.0.0+old"
    recorded["package_version"] = "0.0.1"
    path.write_text(json.dumps(recorded))
    (out / "stats" / "train-000003.json").unlink()
    before = digests(out, ".")
    capsys.readouterr()
    assert main(["run", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(cli_lines(err)) == 1 and "provenance mismatch" in err, err
    assert f"packages.torch: 2.0.0+old -> {torch.__version__}" in err and "--allow-provenance-mismatch" in err
    assert digests(out, ".") == before  # refused before anything was touched

    assert main(["run", str(manifest), "--out", str(out), "--allow-provenance-mismatch", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["completed_shards"] == 1
    after = json.loads(path.read_text())
    assert after["spec"]["provenance"]["packages"]["torch"] == "2.0.0+old"  # the corpus's reference stays
    assert after["package_version"] == "0.0.1"  # the version that made the corpus, not the last resume's
    (mixed,) = after["spec"]["provenance_mismatches"]
    assert mixed["differences"] == [f"packages.torch: 2.0.0+old -> {torch.__version__}"]
    assert mixed["complete_shards_before"] == 7
    assert read_stats(CorpusLayout(out), 3)["provenance"]["packages"]["torch"] == torch.__version__
    card = (out / "README.md").read_text()
    assert f"| Provenance mismatches allowed on resume | 1: packages.torch: 2.0.0+old -> {torch.__version__} |" in card
    assert f"| Teacher weights sha256 | `{reference['teacher']['weights_sha256']}` |" in card
    assert verify_corpus(out).ok

    # a changed engine (inversion arithmetic) changes the spec hash: refused naming it, and no flag helps
    before = digests(out, ".")
    engine = spec_mod.ENGINE_VERSION
    monkeypatch.setattr(spec_mod, "ENGINE_VERSION", engine + 1)
    capsys.readouterr()
    assert main(["run", str(manifest), "--out", str(out), "--allow-provenance-mismatch"]) == 2
    err = capsys.readouterr().err
    assert "different spec" in err and f"engine_version: {engine} -> {engine + 1}" in err
    assert digests(out, ".") == before


def test_shards_made_by_a_worker_unlike_the_reference_are_rejected(make_corpus, corpus_tasks, make_samples,
                                                                   tmp_path):
    """A worker that passed the start-up check can be restarted elsewhere; its shards are caught afterwards."""
    from pipeline.corpus.writer import write_shard
    from pipeline.run.runner import RunReport, reject_foreign_shards

    layout = make_corpus(tmp_path / "c", num_classes=3, shards_per_class=1, per_shard=2)
    reference = {"device": "cuda", "gpu": "NVIDIA H200", "host": "a", "packages": {"torch": "2.14.1"}}
    records = [reference, {**reference, "host": "b"}, {**reference, "gpu": "NVIDIA A100", "host": "c"}]
    for task, record in zip(corpus_tasks(layout), records):
        write_shard(layout, task.shard_id, make_samples(task), num_classes=3, extra_stats={"provenance": record})
    report = RunReport(out=str(layout.root), shards=3, images=6, completed_shards=3, completed_images=6)
    assert reject_foreign_shards(layout, [0, 1, 2], reference, report) == [2]
    assert report.failed_shards == {2: "provenance mismatch: gpu: NVIDIA H200 -> NVIDIA A100"}
    assert (report.completed_shards, report.completed_images) == (2, 4)
    assert not (layout.root / layout.stats(2)).exists() and not (layout.root / layout.tar(2)).exists()
    assert (layout.root / layout.tar(1)).exists()  # another host alone changes no byte


def test_a_resume_reads_the_manifest_once(tmp_path, teacher_file, make_samples, monkeypatch):
    from pipeline.corpus.storage import CorpusStorage
    from pipeline.corpus.writer import write_shard
    from pipeline.run.plan import plan_shards
    from pipeline.run.runner import check_provenance, load_resumable, prepare_out

    spec = load_spec(write_manifest(tmp_path, teacher_file)).with_output(tmp_path / "out")
    tasks, execution = plan_shards(spec), {"device": "cpu", "dtype": "float32", "threads_per_worker": 1}
    record = {"device": "cpu", "packages": {"torch": torch.__version__}}
    prepare_out(spec, tasks, set(), execution, {"provenance": record})
    layout = CorpusLayout(spec.output)
    write_shard(layout, 0, make_samples(tasks[0], num_classes=4), num_classes=4)
    reads = []
    original = CorpusStorage.read_text
    monkeypatch.setattr(CorpusStorage, "read_text", lambda self, name: reads.append(name) or original(self, name))
    spec, manifest, complete = load_resumable(spec, layout)
    recorded = check_provenance([record], layout, complete, manifest=manifest)
    prepare_out(spec, tasks, complete, execution, recorded, manifest=manifest)
    assert complete == {0} and reads.count(layout.manifest) == 1  # three reads before
    assert json.loads((layout.root / layout.manifest).read_text())["complete_shards"] == 1
