"""``smi-synth publish`` against a local fake Hub (tests/fake_hub.py).

huggingface_hub reads HF_ENDPOINT / HF_HUB_DISABLE_XET when it is imported, and other test modules may
import it (through ``datasets``) first, so every upload runs in a subprocess with its own environment:
the CLI, or a small driver when a test needs a smaller commit size. The fake Hub runs in this process
and records every request.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pipeline.corpus.layout import CorpusLayout
from pipeline.errors import UserError
from pipeline.hub.publish import (
    PlannedFile,
    check_hub_limits,
    plan_commits,
    plan_files,
    publish,
    scrub,
)
from tests.conftest import build_corpus
from tests.hub.fake_hub import FakeHub

TOKEN = "hf_SmiSynthFakeToken0123456789abcdef"
REPO = "smi-user/toy-synth"
ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import json, sys
from pipeline.hub.publish import publish
r = publish(sys.argv[1], sys.argv[2], files_per_commit=int(sys.argv[3]), revision=sys.argv[4] or None)
print(json.dumps({"url": r.url, "commits": r.commits, "uploaded": r.uploaded, "skipped": r.skipped}))
"""


def _env(hub: FakeHub, hf_home: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}  # AWS_* stay
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0", HF_HOME=str(hf_home),
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(ROOT))
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_cli(hub: FakeHub, hf_home: Path, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "publish", *args], cwd=ROOT,
                          env=_env(hub, hf_home, token), capture_output=True, text=True, timeout=120)


def run_driver(hub: FakeHub, hf_home: Path, root: Path, files_per_commit: int,
               revision: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, str(root), REPO, str(files_per_commit), revision],
                          cwd=ROOT, env=_env(hub, hf_home), capture_output=True, text=True, timeout=120)


def corpus_files(root: Path) -> dict[str, bytes]:
    """What must end up on the Hub: every planned file of the corpus, by repo path."""
    from pipeline.corpus.index import read_manifest

    layout = CorpusLayout(root)
    return {f.path: layout.storage.read_bytes(f.path) for f in plan_files(layout, read_manifest(layout))}


def assert_no_token(*texts: str, dirs: tuple[Path, ...] = ()) -> None:
    for text in texts:
        assert TOKEN not in text
    for d in dirs:
        for p in d.rglob("*"):
            if p.is_file():
                assert TOKEN.encode() not in p.read_bytes(), p


@pytest.fixture
def hub():
    with FakeHub(TOKEN, page_size=7) as h:  # small pages: the tree listing paginates
        yield h


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory):
    """One full CLI publish of a 3-class corpus: (corpus root, hub, completed process, HF_HOME)."""
    base = tmp_path_factory.mktemp("published")
    root = build_corpus(base / "corpus", num_classes=3, shards_per_class=2, per_shard=3).root
    with FakeHub(TOKEN, page_size=7) as h:
        proc = run_cli(h, base / "hf-home", str(root), "--repo-id", REPO)
        yield root, h, proc, base / "hf-home"


def test_publish_uploads_every_file_byte_for_byte(published) -> None:
    root, hub, proc, hf_home = published
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{hub.url}/datasets/{REPO}"
    remote = hub.files(REPO)
    expected = corpus_files(root)
    assert {p: b for p, b in remote.items() if p != ".gitattributes"} == expected
    assert {"README.md", "manifest.json", "shardindex.json", "preview/overview.png"} <= set(remote)
    assert not any(p.startswith(".cache") or "/." in p or p.startswith(".tmp") for p in remote)
    # API calls carry the token; uploads to LFS storage (a presigned URL on the real Hub) do not.
    for req in hub.requests:
        if req.path.startswith("/api/") and req.path != "/api/agent-harnesses":
            assert req.authorized, req
        if req.method == "PUT":
            assert not req.authorized, req
    assert_no_token(proc.stdout, proc.stderr, dirs=(root, hf_home))


def test_published_copy_loads_with_datasets_and_the_loader(published, tmp_path: Path) -> None:
    root, hub, proc, _ = published
    assert proc.returncode == 0, proc.stderr
    local = tmp_path / "download"
    for path in hub.files(REPO):
        dest = local / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(f"{hub.url}/datasets/{REPO}/resolve/main/{path}") as resp:
            dest.write_bytes(resp.read())
    assert (local / "data/train-000000.tar").read_bytes() == (root / "data/train-000000.tar").read_bytes()

    from pipeline.corpus.loader import iter_samples

    records = list(iter_samples(local))
    assert len(records) == 18 and sorted({r["label"] for r in records}) == [0, 1, 2]

    import datasets

    tars = sorted(str(p) for p in (local / "data").glob("*.tar"))
    ds = datasets.load_dataset("webdataset", data_files={"train": tars}, split="train",
                               cache_dir=str(tmp_path / "hf-datasets"))
    assert isinstance(ds.features["png"], datasets.Image)
    assert len(ds) == 18 and sorted(set(ds["cls"])) == [0, 1, 2]
    assert ds[0]["png"].size == (16, 16) and ds[0]["json"]["label"] == ds[0]["cls"]


def test_interrupted_upload_resumes_without_resending(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=3, shards_per_class=2, per_shard=3).root
    # 6 files per commit = 2 shards (tar, parquet, stats each) per commit; the 6th LFS PUT is refused
    # (403 is not retried): the first commit lands, the second is cut midway.
    hub.fail_after("PUT", r"^/_lfs/", successes=5, status=403)
    first = run_driver(hub, tmp_path / "hf-home", root, 6, revision="release/v1")
    assert first.returncode != 0
    assert "re-run the same command to resume" in first.stderr
    committed = {p for c in hub.commits if c.revision == "release/v1" for p in c.paths}
    put_before = set(hub.put_oids)
    assert committed and len(put_before) >= 5
    n_before = len(hub.requests)

    hub.clear_failures()
    second = run_driver(hub, tmp_path / "hf-home", root, 6, revision="release/v1")
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout.strip().splitlines()[-1])
    rerun = hub.requests[n_before:]
    # Nothing committed before is announced, uploaded or committed again.
    assert not [r for r in rerun if r.method == "PUT" and r.detail[0] in put_before]
    for r in rerun:
        if "/preupload/" in r.path or "/commit/" in r.path:
            assert not committed & set(r.detail), r
    assert not committed & set(result["uploaded"]) and committed <= set(result["skipped"])
    assert len(result["commits"]) >= 3  # multi-commit, not one commit per file nor one in all
    assert result["url"].endswith("/tree/release/v1")
    remote = hub.files(REPO, revision="release/v1")
    assert {p: b for p, b in remote.items() if p != ".gitattributes"} == corpus_files(root)
    assert set(hub.files(REPO, revision="main")) == {".gitattributes"}
    assert_no_token(first.stdout, first.stderr, second.stdout, second.stderr, dirs=(root, tmp_path / "hf-home"))


def test_transient_errors_are_retried(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=2, shards_per_class=1, per_shard=2).root
    hub.fail("POST", r"/preupload/", 429, retry_after=0)
    hub.fail("PUT", r"^/_lfs/", 500)
    hub.fail("POST", r"^/api/datasets/.*/commit/", 500)
    proc = run_cli(hub, tmp_path / "hf-home", str(root), "--repo-id", REPO)
    assert proc.returncode == 0, proc.stderr
    injected = [r for r in hub.requests if r.injected]
    assert sorted(r.status for r in injected) == [429, 500, 500]
    for bad in injected:  # each failed request was followed by a successful one of the same kind
        assert any(r.method == bad.method and r.path == bad.path and r.status == 200
                   for r in hub.requests[hub.requests.index(bad) + 1:]), bad
    remote = hub.files(REPO)
    assert {p: b for p, b in remote.items() if p != ".gitattributes"} == corpus_files(root)
    assert len(hub.put_oids) == len(set(hub.put_oids))  # the commit retry re-sent no object
    assert_no_token(proc.stdout, proc.stderr)


def tree_digests(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256 (to show that nothing local was written)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_requests(hub: FakeHub) -> list:
    return [r for r in hub.requests if r.method not in ("GET", "HEAD")]


def dry_run_lines(stdout: str, action: str) -> list[str]:
    """Paths on the dry run's ``action`` lines (add, replace, unchanged, delete)."""
    head = stdout.split("\n--- README.md ---")[0]
    return sorted(line.split()[-1] for line in head.splitlines() if line.split()[:1] == [action])


FOREIGN = {  # what an existing dataset repo may hold that is not this corpus's: never touched
    "data/train-00000-of-00001.parquet": b"PAR1 push_to_hub layout PAR1",
    "notes.md": b"kept",
    "preview/custom.png": b"someone's picture",
}
STALE = {"data/train-000042.tar": b"old shard", "stats/train-000042.json": b"{}"}  # corpus-layout names


def test_publish_touches_only_its_own_files(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=1, shards_per_class=1, per_shard=2).root
    hub.add_repo(REPO)
    hub.put_files(REPO, {**FOREIGN, **STALE})
    home = tmp_path / "hf-home"

    # dry run: stale corpus files are listed for deletion only with --delete-stale, foreign ones never
    for flag, deleted in (((), []), (("--delete-stale",), sorted(STALE))):
        proc = run_cli(hub, home, str(root), "--repo-id", REPO, "--dry-run", *flag)
        assert proc.returncode == 0, proc.stderr
        assert dry_run_lines(proc.stdout, "delete") == deleted
        assert ("--delete-stale to delete them" in proc.stdout) == (not flag)
    assert write_requests(hub) == []

    proc = run_cli(hub, home, str(root), "--repo-id", REPO)
    assert proc.returncode == 0, proc.stderr
    assert "left 2 stale files in place (--delete-stale removes them)" in proc.stdout
    assert "--delete-stale" in proc.stderr  # the warning, before anything was sent
    remote = hub.files(REPO)
    assert {p: remote[p] for p in {**FOREIGN, **STALE}} == {**FOREIGN, **STALE}

    proc = run_cli(hub, home, str(root), "--repo-id", REPO, "--delete-stale")
    assert proc.returncode == 0, proc.stderr
    assert "removed 2 stale files" in proc.stdout
    remote = hub.files(REPO)
    assert not set(STALE) & set(remote)
    assert {p: remote[p] for p in FOREIGN} == FOREIGN
    assert {p: b for p, b in remote.items() if p not in (".gitattributes", *FOREIGN)} == corpus_files(root)


def test_corrupt_shard_is_refused_before_any_request(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=2, shards_per_class=1, per_shard=2).root
    tar = root / "data" / "train-000001.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF
    tar.write_bytes(bytes(data))
    proc = run_cli(hub, tmp_path / "hf-home", str(root), "--repo-id", REPO)
    assert proc.returncode == 2
    assert "failed verification" in proc.stderr and "train-000001" in proc.stderr
    assert hub.requests == []


def test_incomplete_corpus_is_refused_before_any_request(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=2, shards_per_class=1, per_shard=2, pending=[1]).root
    proc = run_cli(hub, tmp_path / "hf-home", str(root), "--repo-id", REPO)
    assert proc.returncode == 2 and "not complete" in proc.stderr
    assert hub.requests == []


def test_dry_run_lists_the_changes_and_writes_nothing(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=2, shards_per_class=1, per_shard=2).root
    # What older huggingface_hub's upload_large_folder kept in the folder: neither verify nor publish mind it.
    cache = root / ".cache" / "huggingface" / "upload" / "data"
    cache.mkdir(parents=True)
    (cache / "train-000000.tar.metadata").write_text("x")
    before = tree_digests(root)
    proc = run_cli(hub, tmp_path / "hf-home", str(root), "--repo-id", REPO, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert hub.requests and write_requests(hub) == []  # it read the (missing) repo, wrote nothing
    assert f"note: dataset {REPO} does not exist; publish would create it" in proc.stdout
    assert tree_digests(root) == before  # no README.md, no previews, nothing else written locally
    assert ".cache" not in proc.stdout
    files = corpus_files(root)  # the shard files, manifest.json and shardindex.json
    for path, content in files.items():
        assert f"add       {len(content):>14}  {path}" in proc.stdout
    card = proc.stdout.split("\n--- README.md ---\n", 1)[1]
    assert f'load_dataset("{REPO}", split="train")' in card
    assert f"add       {len(card[:-1].encode()):>14}  README.md" in proc.stdout  # print() added the last newline
    assert "![overview](preview/overview.png)" in card  # the card publish would write, previews and all
    assert "(generated)  preview/overview.png" in proc.stdout
    assert proc.stdout.startswith(f"dry run: public dataset {REPO}: {len(files) + 4} to add, 0 to replace, 0 unchanged, "
                                  "0 to delete; nothing was written or sent")

    # once published, a dry run finds everything in place; a changed shard is listed as replaced
    assert run_cli(hub, tmp_path / "hf-home", str(root), "--repo-id", REPO).returncode == 0
    n = len(hub.requests)
    proc = run_cli(hub, tmp_path / "hf-home", str(root), "--repo-id", REPO, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert not [r for r in hub.requests[n:] if r.method not in ("GET", "HEAD")]
    assert dry_run_lines(proc.stdout, "add") == dry_run_lines(proc.stdout, "replace") == []
    assert "README.md" in dry_run_lines(proc.stdout, "unchanged")


def test_missing_token_is_refused_before_any_request(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=1, shards_per_class=1, per_shard=2).root
    proc = run_cli(hub, tmp_path / "hf-home", str(root), "--repo-id", REPO, token=None)
    assert proc.returncode == 2 and "HF_TOKEN" in proc.stderr
    assert hub.requests == []


def test_private_flag_refuses_an_existing_public_repo(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=1, shards_per_class=1, per_shard=2).root
    hub.add_repo(REPO, private=False)
    proc = run_cli(hub, tmp_path / "hf-home", str(root), "--repo-id", REPO, "--private")
    assert proc.returncode == 2 and "public" in proc.stderr
    assert hub.commits == [] and not [r for r in hub.requests if r.method == "PUT" or "/commit/" in r.path]


@pytest.mark.parametrize("flags, repo, private", [
    ((), REPO, True),  # the manifest's hub section alone
    (("--repo-id", "smi-user/other-name"), "smi-user/other-name", True),  # a repo id does not make it public
    (("--private",), REPO, True),
    (("--public",), REPO, False),  # the only way to publish a corpus marked private as public
])
def test_manifest_hub_section_decides_repo_and_visibility(hub: FakeHub, tmp_path: Path, flags, repo, private) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=1, shards_per_class=1, per_shard=2,
                        hub={"repo_id": REPO, "private": True, "license": None}).root
    proc = run_cli(hub, tmp_path / "hf-home", str(root), *flags)
    assert proc.returncode == 0, proc.stderr
    assert list(hub.repos) == [repo] and hub.repos[repo].private is private
    visibility = "private" if private else "public"
    assert f"| Published as | {visibility} dataset |" in hub.files(repo)["README.md"].decode()
    assert proc.stdout.startswith(f"{visibility} dataset {repo}:")


def test_publish_streams_a_corpus_from_object_storage(hub: FakeHub, s3_url: str, tmp_path: Path) -> None:
    """``publish s3://...``: every file arrives byte-identical, read from the S3 API (moto), never a local copy."""
    layout = build_corpus(s3_url, num_classes=2, shards_per_class=2, per_shard=3)
    proc = run_cli(hub, tmp_path / "hf-home", s3_url, "--repo-id", REPO)
    assert proc.returncode == 0, proc.stderr
    expected = corpus_files(layout.root)
    assert "README.md" in expected and any(p.startswith("data/") for p in expected)
    assert {p: b for p, b in hub.files(REPO).items() if p != ".gitattributes"} == expected  # the Hub's own file


def test_corpus_marked_private_never_uses_an_existing_public_repo(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=1, shards_per_class=1, per_shard=2,
                        hub={"repo_id": REPO, "private": True, "license": None}).root
    hub.add_repo(REPO, private=False)
    proc = run_cli(hub, tmp_path / "hf-home", str(root))
    assert proc.returncode == 2 and "public" in proc.stderr and "--public" in proc.stderr
    assert hub.commits == [] and not [r for r in hub.requests if r.method == "PUT" or "/commit/" in r.path]


def test_unmarked_corpus_without_repo_id_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=1, shards_per_class=1, per_shard=2).root
    proc = run_cli(hub, tmp_path / "hf-home", str(root))
    assert proc.returncode == 2 and "hub.repo_id" in proc.stderr
    assert hub.requests == []
    proc = run_cli(hub, tmp_path / "hf-home", str(root), "--repo-id", REPO, "--private", "--public")
    assert proc.returncode == 2 and hub.requests == []


# ---------------------------------------------------------------------------------------------- units


def _files(paths: list[str], unit_of=lambda p: p) -> list[PlannedFile]:
    return [PlannedFile(p, Path(p), 1, None, unit_of(p)) for p in paths]


def test_hub_file_limits() -> None:
    check_hub_limits(_files([f"data/train-{i:06d}.tar" for i in range(10_000)]))
    with pytest.raises(UserError, match="per folder"):
        check_hub_limits(_files([f"data/train-{i:06d}.tar" for i in range(10_001)]))
    with pytest.raises(UserError, match="per repository"):
        check_hub_limits(_files([f"d{i % 20}/f{i}" for i in range(100_001)]))
    with pytest.raises(UserError, match="per file"):
        check_hub_limits([PlannedFile("data/train-000000.tar", Path("x"), 60 * 10**9)])


def test_commit_plan_keeps_shards_whole() -> None:
    files = _files([f"{d}/train-{i:06d}.x" for i in range(5) for d in ("data", "metadata", "stats")],
                   unit_of=lambda p: p.rsplit("-", 1)[1])
    files += _files(["manifest.json", "README.md"])
    batches = plan_commits(files, files_per_commit=7)
    assert [len(b) for b in batches] == [6, 6, 5]
    assert [f.path for b in batches for f in b] == [f.path for f in files]
    assert batches[-1][-1].path == "README.md"


def test_scrub_removes_tokens() -> None:
    text = f"401 for Authorization: Bearer {TOKEN} and hf_abcdefghijklmnop, secret xyz-123"
    out = scrub(text, ["xyz-123"])
    assert TOKEN not in out and "hf_abcdefghijklmnop" not in out and "xyz-123" not in out


def test_bad_repo_id_is_a_user_error(tmp_path: Path) -> None:
    root = build_corpus(tmp_path / "corpus", num_classes=1, shards_per_class=1, per_shard=2).root
    with pytest.raises(UserError, match="namespace/name"):
        publish(root, "no-namespace", dry_run=True)
