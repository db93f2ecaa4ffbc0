"""``smi-synth run --out s3://...`` against a real S3 API (moto's server): the same bytes as a local run,
and a run killed with SIGKILL resumes byte-identically."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.cli import main
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.verify import verify_corpus
from tests.run.tiny_run import KILL_RUN, ROOT, tar_digests, write_manifest

pytestmark = pytest.mark.usefixtures("local_ray")


def s3_digests(url: str) -> dict[str, str]:
    layout = CorpusLayout(url)
    storage = layout.storage
    return {n: hashlib.sha256(storage.read_bytes(f"data/{n}")).hexdigest() for n in storage.listdir("data")}


def test_run_to_s3_gives_the_local_bytes(tiny_corpus, s3_url):
    manifest, local = tiny_corpus.manifest, tiny_corpus.out  # the local run
    assert main(["run", str(manifest), "--out", s3_url]) == 0
    assert not (manifest.parent / "s3:").exists() and not (ROOT / "s3:").exists()  # no local folder named after the URL
    assert s3_digests(s3_url) == tar_digests(local) and len(tar_digests(local)) == 8
    layout = CorpusLayout(s3_url)
    for sid in range(8):
        assert layout.storage.read_bytes(layout.parquet(sid)) == (local / layout.parquet(sid)).read_bytes()
    assert verify_corpus(s3_url).ok
    assert main(["run", str(manifest), "--out", s3_url]) == 0  # complete: a resume has nothing to do


@pytest.mark.slow  # about a minute on an idle 2-core box: `make test-all`
def test_kill_9_mid_run_to_s3_then_resume_is_byte_identical(tmp_path, teacher_file, s3_url):
    manifest = write_manifest(tmp_path, teacher_file, **KILL_RUN)
    reference = tmp_path / "reference"
    assert main(["run", str(manifest), "--out", str(reference)]) == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", s3_url],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ),
    )
    storage = CorpusLayout(s3_url).storage
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(storage.listdir("stats")) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(storage.listdir("stats")) < 8
    assert main(["run", str(manifest), "--out", s3_url]) == 0
    assert s3_digests(s3_url) == tar_digests(reference)
    assert verify_corpus(s3_url).ok
