"""``smi-synth publish``: verify a corpus, write its card and previews, upload it to a Hub dataset repo.

Nothing is sent unless the corpus verifies and every planned shard is complete. The upload is
resumable and split into several commits: each commit is one ``HfApi.create_commit`` of at most
:data:`FILES_PER_COMMIT` files (whole shards: tar, parquet and stats together; card and index
last). Before uploading, the remote tree is listed and files already on the Hub with the same
content are skipped, so re-running after an interruption neither re-sends nor re-commits them; LFS
objects that were uploaded but not yet committed are not re-sent either (the Hub's LFS batch answer
has no upload action for objects it already holds). huggingface_hub retries 429/5xx on each request;
a commit that still fails transiently is retried here as a whole.

Publish touches only its own files. A remote file is *stale* when its name is one the corpus layout
produces (``data/train-NNNNNN.tar``, ``metadata/train-NNNNNN.parquet``, ``stats/train-NNNNNN.json``,
``preview/class-NNNNN.png``, ``preview/overview.png``: :func:`is_layout_name`) and this corpus does not
have it (an earlier, different corpus); stale files are deleted in the last commit only with
``delete_stale`` (``--delete-stale``), and otherwise reported, since ``datasets`` would load stale
tars along with the new ones. Every other remote file (``data/train-00000-of-00001.parquet`` of a
``push_to_hub`` upload, notes, code) is never deleted or overwritten unless the corpus has a file of
the same name. ``dry_run`` lists what would be added, replaced and deleted (it reads the remote tree
when the Hub can be reached) and writes nothing, locally or remotely: the card is rendered in memory.

Why not ``upload_large_folder``: huggingface_hub 2.x removed it. Its successor, ``upload_folder``'s
streamed multi-commit pipeline, runs only over Xet (``hf_xet``); without Xet ``upload_folder`` makes
one single commit. The loop here behaves the same with or without Xet (create_commit picks the
transfer) and leaves nothing in the corpus folder (no ``.cache/huggingface``).

The token comes from huggingface_hub's standard places (``token=``, ``HF_TOKEN``, ``hf auth login``);
it is never printed, logged or written by this module, and is scrubbed from error messages.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from pipeline.corpus.card import render_card, write_card
from pipeline.corpus.index import read_manifest, read_stats
from pipeline.corpus.layout import (
    DATA_DIR,
    METADATA_DIR,
    OVERVIEW_NAME,
    PREVIEW_DIR,
    README,
    STATS_DIR,
    CorpusLayout,
    as_layout,
)
from pipeline.corpus.storage import CorpusStorage, LocalStorage
from pipeline.corpus.verify import verify_corpus
from pipeline.errors import UserError
from pipeline.hub.preview import expected_previews, write_previews
from pipeline.run.spec import REPO_ID

log = logging.getLogger(__name__)

HUB_MAX_FILES = 100_000  # Hub limit per repository
HUB_MAX_FILES_PER_FOLDER = 10_000  # Hub limit per folder
HUB_MAX_FILE_BYTES = 50 * 10**9  # Hub limit per file
FILES_PER_COMMIT = 250
BYTES_PER_COMMIT = 20 * 10**9
COMMIT_ATTEMPTS = 4  # per batch, on transient failures (after huggingface_hub's own per-request retries)
RETRY_BASE_SECONDS = 1.0
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
TOP_LEVEL = ("manifest.json", "shardindex.json", "README.md")  # committed last, README.md very last
LAYOUT_NAME = re.compile(  # the names a corpus layout produces: the only remote files publish may delete
    rf"^(?:{DATA_DIR}/train-\d{{6,}}\.tar|{METADATA_DIR}/train-\d{{6,}}\.parquet|{STATS_DIR}/train-\d{{6,}}\.json"
    rf"|{PREVIEW_DIR}/class-\d{{5,}}\.png|{PREVIEW_DIR}/{re.escape(OVERVIEW_NAME)})$"
)
_TOKENISH = re.compile(r"(Bearer\s+)\S+|\bhf_[A-Za-z0-9]{8,}")


class PublishError(Exception):
    """The upload failed (network, Hub). Exit code 1; the message never contains the token."""


@dataclass(frozen=True)
class PlannedFile:
    """One file to upload: its path in the repo (= its name in the corpus), the corpus storage and size."""

    path: str
    storage: CorpusStorage
    size: int
    sha256: str | None = None  # known from stats (tar, parquet): no second read of the file
    unit: str = ""  # files of the same unit (one shard) go into the same commit
    content: bytes | None = None  # in-memory content (a dry run's card), instead of the stored file

    def upload_source(self, stack: ExitStack) -> str | BinaryIO:
        """What the Hub client uploads: the local file's path, or the object opened for streaming from
        object storage (closed with ``stack``)."""
        if isinstance(self.storage, LocalStorage):
            return str(self.storage.local_path(self.path))
        return stack.enter_context(io.BufferedReader(self.storage.open(self.path)))  # the Hub client's file type


def is_layout_name(path: str) -> bool:
    """Whether ``path`` (in the repo) is a name the corpus layout produces (shard files, previews)."""
    return LAYOUT_NAME.match(path) is not None


@dataclass
class PublishReport:
    """What ``publish`` planned and did."""

    repo_id: str
    revision: str | None
    dry_run: bool
    files: list[PlannedFile]
    card: str
    private: bool = False  # the visibility the repository is created with (and the card states)
    url: str | None = None
    commits: list[str] = field(default_factory=list)  # commit URLs created by this run
    uploaded: list[str] = field(default_factory=list)  # paths committed by this run
    skipped: list[str] = field(default_factory=list)  # paths already identical on the Hub
    deleted: list[str] = field(default_factory=list)  # stale remote files deleted (only with delete_stale)
    added: list[str] = field(default_factory=list)  # planned paths the Hub does not have
    replaced: list[str] = field(default_factory=list)  # planned paths the Hub has with other content
    stale: list[str] = field(default_factory=list)  # stale remote files left in place (no delete_stale)
    generated: list[str] = field(default_factory=list)  # dry run: previews publish would write first
    remote_note: str = ""  # dry run: why the remote tree is unknown or empty, if it is


# ---------------------------------------------------------------------------------------------- planning


def check_ready(layout: CorpusLayout) -> dict:
    """Verify the corpus; UserError unless it is ok and complete. Returns the manifest."""
    manifest = read_manifest(layout)
    if not manifest["shards"]:
        raise UserError(f"{layout.root}: the manifest plans no shards; nothing to publish")
    report = verify_corpus(layout)
    if not report.ok:
        shown = "; ".join(report.problems[:3])
        if len(report.problems) > 3:
            shown += f"; ... {len(report.problems) - 3} more"
        raise UserError(f"{layout.root} failed verification, nothing was sent: {shown} "
                        f"(details: smi-synth verify {layout.root})")
    pending = sorted(set(report.pending_shards) | {
        int(e["shard_id"]) for e in manifest["shards"] if not layout.storage.exists(layout.stats(int(e["shard_id"])))})
    if pending:
        raise UserError(f"{layout.root}: {len(pending)} of {len(manifest['shards'])} shards are not complete "
                        f"(first: {pending[0]}); finish the run before publishing, nothing was sent")
    return manifest


def plan_files(layout: CorpusLayout, manifest: dict, card: str | None = None) -> list[PlannedFile]:
    """Files to upload, in upload order: shards (tar, parquet, stats), previews, then the top level.

    ``card``: README.md's text, uploaded from memory (a dry run writes no README.md).
    """
    files: list[PlannedFile] = []

    storage = layout.storage

    def add(name: str, sha256: str | None = None, unit: str = "") -> None:
        if name == README and card is not None:
            data = card.encode("utf-8")
            files.append(PlannedFile(name, storage, len(data), hashlib.sha256(data).hexdigest(), name, data))
            return
        files.append(PlannedFile(name, storage, storage.size(name), sha256, unit or name))

    for entry in sorted(manifest["shards"], key=lambda e: int(e["shard_id"])):
        sid = int(entry["shard_id"])
        stats = read_stats(layout, sid)
        unit = f"shard-{sid}"
        add(layout.tar(sid), stats.get("tar_sha256"), unit)
        add(layout.parquet(sid), stats.get("parquet_sha256"), unit)
        add(layout.stats(sid), None, unit)
    for name in expected_previews(layout, manifest):
        if storage.is_file(layout.preview(name)):
            add(layout.preview(name))
    for name in TOP_LEVEL:
        if storage.is_file(name) or (name == README and card is not None):
            add(name)
    return files


def check_hub_limits(files: list[PlannedFile]) -> None:
    """UserError when the corpus exceeds the Hub's file-count limits."""
    if len(files) > HUB_MAX_FILES:
        raise UserError(f"{len(files)} files to upload; the Hub allows at most {HUB_MAX_FILES} per repository "
                        f"(use larger shards: images_per_shard)")
    big = [f for f in files if f.size > HUB_MAX_FILE_BYTES]
    if big:
        raise UserError(f"{big[0].path} is {big[0].size} bytes; the Hub allows at most {HUB_MAX_FILE_BYTES} per file "
                        f"(use smaller shards: images_per_shard)")
    per_folder = Counter(str(PurePosixPath(f.path).parent) for f in files)
    folder, count = max(per_folder.items(), key=lambda kv: kv[1], default=(".", 0))
    if count > HUB_MAX_FILES_PER_FOLDER:
        raise UserError(f"{count} files in {folder}/; the Hub allows at most {HUB_MAX_FILES_PER_FOLDER} per folder "
                        f"(use larger shards: images_per_shard)")


def plan_commits(files: list[PlannedFile], files_per_commit: int = FILES_PER_COMMIT,
                 bytes_per_commit: int = BYTES_PER_COMMIT) -> list[list[PlannedFile]]:
    """Split files into commits, keeping each unit (shard) whole and the order unchanged."""
    units: list[list[PlannedFile]] = []
    for f in files:
        if units and units[-1][0].unit == f.unit:
            units[-1].append(f)
        else:
            units.append([f])
    batches: list[list[PlannedFile]] = []
    current: list[PlannedFile] = []
    for unit in units:
        size = sum(f.size for f in current) + sum(f.size for f in unit)
        if current and (len(current) + len(unit) > files_per_commit or size > bytes_per_commit):
            batches.append(current)
            current = []
        current += unit
    if current:
        batches.append(current)
    return batches


# ---------------------------------------------------------------------------------------------- remote


def _git_blob_sha1(f: PlannedFile) -> str:
    h = hashlib.sha1(b"blob %d\0" % f.size, usedforsecurity=False)
    if f.content is not None:
        h.update(f.content)
        return h.hexdigest()
    with f.storage.open(f.path) as stream:
        while chunk := stream.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _unchanged(f: PlannedFile, remote: Any) -> bool:
    """Whether the Hub already holds ``f``'s exact content at its path (``remote``: a RepoFile or None)."""
    if remote is None or remote.size != f.size:
        return False
    if remote.lfs is not None:
        return remote.lfs.sha256 == (f.sha256 or f.storage.sha256(f.path))
    return remote.blob_id == _git_blob_sha1(f)


def classify(report: PublishReport, remote: dict[str, Any], delete_stale: bool) -> list[PlannedFile]:
    """Fill ``report``'s added / replaced / skipped (unchanged) / deleted / stale lists against the
    remote tree ``remote`` (path -> RepoFile); return the files to upload."""
    todo: list[PlannedFile] = []
    for f in report.files:
        if f.path not in remote:
            report.added.append(f.path)
        elif _unchanged(f, remote[f.path]):
            report.skipped.append(f.path)
            continue
        else:
            report.replaced.append(f.path)
        todo.append(f)
    planned = {f.path for f in report.files} | {f"{PREVIEW_DIR}/{n}" for n in report.generated}
    stale = sorted(p for p in remote if p not in planned and is_layout_name(p))
    if delete_stale:
        report.deleted = stale
    else:
        report.stale = stale
    return todo


def _stale_warning(report: PublishReport) -> str:
    n = len(report.stale)
    return (f"{n} remote file{'s' if n > 1 else ''} named like a corpus's but not in this one (e.g. "
            f"{report.stale[0]}) stay{'s' if n == 1 else ''} in place; `datasets` will load stale tars along with "
            f"these: pass --delete-stale to delete them")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _transient(exc: BaseException) -> bool:
    """A failure worth retrying: HTTP 408/429/5xx or a network error, anywhere in the cause chain."""
    seen: BaseException | None = exc
    while seen is not None:
        status = _status(seen)
        if status is not None:
            return status in TRANSIENT_STATUS
        if any(n in type(seen).__name__ for n in ("Timeout", "NetworkError", "ConnectError", "RemoteProtocolError")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    """``Type: message``, plus the HTTP status and first line of the underlying HTTP error if any."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if _status(cause) is not None:
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            return f"{text} (caused by HTTP {_status(cause)}: {first})"
        cause = cause.__cause__ or cause.__context__
    return text


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` without any of ``secrets`` nor anything that looks like a bearer/HF token."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return _TOKENISH.sub(lambda m: (m.group(1) or "") + "***", text)


class _Uploader:
    """Create the repo/branch, diff against the remote tree, commit batches with retries."""

    def __init__(self, repo_id: str, revision: str | None, private: bool, token: str | None,
                 emit: Callable[[str], None]) -> None:
        from huggingface_hub import HfApi, constants, get_token

        if constants.HF_HUB_OFFLINE:
            raise UserError("HF_HUB_OFFLINE is set: unset it to publish (nothing was sent)")
        self.token = token or get_token()
        if not self.token:
            raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was sent)")
        self.api = HfApi(token=self.token, library_name="smi-synth")
        self.repo_id, self.revision, self.private, self.emit = repo_id, revision, private, emit

    def prepare(self) -> str:
        """whoami, create the repo (and branch) if needed; return the repo (tree) URL."""
        from huggingface_hub.errors import HfHubHTTPError

        try:
            user = self.api.whoami()
        except HfHubHTTPError as exc:
            if _status(exc) == 401:
                raise UserError("the Hub rejected the token (401): check HF_TOKEN or `hf auth login`") from None
            raise
        self.emit(f"authenticated as {user.get('name', '?')}")
        url = str(self.api.create_repo(self.repo_id, repo_type="dataset", private=self.private, exist_ok=True))
        if self.private and not self.api.repo_info(self.repo_id, repo_type="dataset").private:
            raise UserError(f"{self.repo_id} already exists and is public, and this corpus is to be published "
                            f"private (--private or the manifest's hub.private); nothing was uploaded (make the "
                            f"repository private on the Hub, or pass --public)")
        if self.revision:
            self.api.create_branch(self.repo_id, repo_type="dataset", branch=self.revision, exist_ok=True)
            url = f"{url}/tree/{self.revision}"
        return url

    def remote_files(self) -> dict[str, Any]:
        from huggingface_hub import RepoFile

        tree = self.api.list_repo_tree(self.repo_id, repo_type="dataset", revision=self.revision, recursive=True)
        return {item.path: item for item in tree if isinstance(item, RepoFile)}

    def commit(self, batch: list[PlannedFile], message: str, delete: tuple[str, ...] = ()) -> str | None:
        """One commit of ``batch`` and deletions (files unchanged on the Hub are dropped by create_commit)."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        for attempt in range(COMMIT_ATTEMPTS):
            ops: list[Any] = [CommitOperationDelete(path_in_repo=p) for p in delete]
            try:
                with ExitStack() as sources:
                    for f in batch:
                        op = CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=f.upload_source(sources))
                        if f.sha256:
                            op.upload_info.sha256 = bytes.fromhex(f.sha256)
                        ops.append(op)
                    info = self.api.create_commit(self.repo_id, ops, commit_message=message, repo_type="dataset",
                                                  revision=self.revision)
                return info.commit_url
            except Exception as exc:  # noqa: BLE001 - classified below
                if attempt == COMMIT_ATTEMPTS - 1 or not _transient(exc):
                    raise
                if delete:  # a lost response may have applied the deletions already
                    remote = self.remote_files()
                    delete = tuple(p for p in delete if p in remote)
                wait = RETRY_BASE_SECONDS * 2**attempt
                self.emit(f"  transient failure ({_status(exc) or type(exc).__name__}); retrying in {wait:.0f}s")
                time.sleep(wait)
        return None


def _span(batch: list[PlannedFile]) -> str:
    if not batch:
        return "(removing stale files)"
    return batch[0].path if len(batch) == 1 else f"{batch[0].path} .. {batch[-1].path}"


def _upload(report: PublishReport, private: bool, token: str | None, files_per_commit: int,
            emit: Callable[[str], None], delete_stale: bool = False) -> None:
    up = _Uploader(report.repo_id, report.revision, private, token, emit)
    secrets = [up.token or ""]
    done = 0
    batches: list[list[PlannedFile]] = []
    try:
        report.url = up.prepare()
        remote = up.remote_files()
        todo = classify(report, remote, delete_stale)
        if report.stale:
            emit(_stale_warning(report))
        batches = plan_commits(todo, files_per_commit) or ([[]] if report.deleted else [])
        emit(f"{len(report.skipped)} files already on the Hub; uploading {len(todo)} files "
             f"({sum(f.size for f in todo)} bytes) in {len(batches)} commits"
             + (f", removing {len(report.deleted)} stale files" if report.deleted else ""))
        for i, batch in enumerate(batches, 1):
            last = i == len(batches)
            message = f"smi-synth: upload {_span(batch)} ({i}/{len(batches)})"
            emit(f"commit {i}/{len(batches)}: {len(batch)} files, {sum(f.size for f in batch)} bytes")
            url = up.commit(batch, message, tuple(report.deleted) if last else ())
            if url:
                report.commits.append(url)
            report.uploaded += [f.path for f in batch]
            done = i
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised without the token and without its chain
        detail = scrub(_describe(exc), secrets)
        where = f"after {done} of {len(batches)} commits" if batches else "before the first commit"
        raise PublishError(f"upload to {report.repo_id} stopped {where}: {detail} -- re-run the same command "
                           f"to resume (committed files are skipped)") from None


def _remote_for_dry_run(report: PublishReport, token: str | None) -> dict[str, Any]:
    """The remote tree, read only (anonymously when no token is configured); ``{}`` with a note
    when the repo or branch does not exist (or is not visible), or the Hub is offline."""
    from huggingface_hub import HfApi, RepoFile, constants, get_token
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if constants.HF_HUB_OFFLINE:
        report.remote_note = "HF_HUB_OFFLINE is set: the remote tree was not read, every file is listed as added"
        return {}
    token = token or get_token()
    api = HfApi(token=token or None, library_name="smi-synth")
    try:
        tree = api.list_repo_tree(report.repo_id, repo_type="dataset", revision=report.revision, recursive=True)
        return {item.path: item for item in tree if isinstance(item, RepoFile)}
    except RepositoryNotFoundError:
        report.remote_note = (f"dataset {report.repo_id} does not exist" + ("" if token else " (or is private: no token)")
                              + "; publish would create it")
    except RevisionNotFoundError:
        report.remote_note = f"branch {report.revision} does not exist; publish would create it"
    except Exception as exc:  # noqa: BLE001 - re-raised without the token
        raise PublishError(f"dry run: cannot list {report.repo_id}: {scrub(_describe(exc), [token or ''])}") from None
    return {}


# ---------------------------------------------------------------------------------------------- api


def publish_target(manifest: dict, repo_id: str | None, private: bool, public: bool) -> tuple[str, bool]:
    """The repository and visibility to publish to: the command line, else the corpus's ``hub`` section.

    A corpus whose manifest says ``hub.private: true`` is published private whatever ``repo_id`` is given;
    only ``public`` (``--public``) publishes it public.
    """
    if private and public:
        raise UserError("--private and --public contradict each other; give one")
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
    hub = spec.get("hub") if isinstance(spec.get("hub"), dict) else {}
    repo = repo_id or hub.get("repo_id")
    if not repo:
        raise UserError("no repository: pass --repo-id NAMESPACE/NAME or set hub.repo_id in the manifest")
    if not REPO_ID.match(str(repo)):
        raise UserError(f"--repo-id must look like 'namespace/name', got {repo!r}")
    return str(repo), not public and (private or hub.get("private") is True)


def publish(
    root: CorpusLayout | str | Path,
    repo_id: str | None = None,
    *,
    private: bool = False,
    public: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    delete_stale: bool = False,
    token: str | None = None,
    files_per_commit: int = FILES_PER_COMMIT,
    on_event: Callable[[str], None] | None = None,
) -> PublishReport:
    """Verify, write card (and previews if missing), then upload; see the module doc.

    ``repo_id`` and ``private`` default to the corpus's ``hub`` section (:func:`publish_target`);
    ``public`` is the only way to publish a corpus marked private as a public dataset.
    ``dry_run``: verify, render the card in memory, read the remote tree and classify every file;
    nothing is written locally or remotely.
    """
    emit = on_event or (lambda msg: log.info("%s", msg))
    if files_per_commit < 1:
        raise ValueError(f"files_per_commit must be >= 1, got {files_per_commit}")
    layout = as_layout(root)
    repo_id, private = publish_target(read_manifest(layout), repo_id, private, public)
    emit(f"publishing to dataset {repo_id} as {'private' if private else 'public'}")
    emit(f"verifying {layout.root} (sha256 of every shard)")
    manifest = check_ready(layout)
    emit(f"verified {len(manifest['shards'])} shards")
    missing = [n for n in expected_previews(layout, manifest) if not layout.storage.is_file(layout.preview(n))]
    if dry_run:
        card = render_card(layout, repo_id, preview=True, private=private)  # publish writes missing previews first
        files = plan_files(layout, manifest, card=card)
        check_hub_limits(files)
        report = PublishReport(repo_id, revision, True, files, card, private, generated=missing)
        remote = _remote_for_dry_run(report, token)
        classify(report, remote, delete_stale)
        generated = [layout.preview(n) for n in missing]
        report.replaced += [p for p in generated if p in remote]
        report.added += [p for p in generated if p not in remote]
        return report
    if missing:
        emit(f"wrote {len(write_previews(layout))} preview sheets")
    card = write_card(layout, repo_id, private=private)
    files = plan_files(layout, manifest)
    check_hub_limits(files)
    report = PublishReport(repo_id, revision, dry_run, files, card, private)
    _upload(report, private, token, files_per_commit, emit, delete_stale)
    return report


def cmd_publish(args: argparse.Namespace) -> int:
    """``smi-synth publish OUT [--repo-id NS/NAME] [--private | --public] [--revision BRANCH] [--dry-run]``."""

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if not args.dry_run and not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # per-file bars are noise in logs; our own lines remain

    report = publish(args.out, args.repo_id, private=args.private, public=args.public, revision=args.revision,
                     dry_run=args.dry_run, delete_stale=getattr(args, "delete_stale", False), on_event=progress)
    if report.dry_run:
        sizes = {f.path: f.size for f in report.files}
        where = (f"{'private' if report.private else 'public'} dataset {report.repo_id}"
                 + (f" (branch {report.revision})" if report.revision else ""))
        print(f"dry run: {where}: {len(report.added)} to add, {len(report.replaced)} to replace, "
              f"{len(report.skipped)} unchanged, {len(report.deleted)} to delete; nothing was written or sent")
        if report.remote_note:
            print(f"note: {report.remote_note}")
        generated = {f"preview/{n}" for n in report.generated}
        for action, paths in (("add", report.added), ("replace", report.replaced), ("unchanged", report.skipped)):
            for path in paths:
                size = "(generated)" if path in generated else str(sizes[path])
                print(f"{action:<9} {size:>14}  {path}")
        for path in report.deleted:
            print(f"{'delete':<9} {'':>14}  {path}")
        if report.stale:
            print(f"note: {_stale_warning(report)}")
        print("\n--- README.md ---")
        print(report.card)
        return 0
    print(f"{'private' if report.private else 'public'} dataset {report.repo_id}: "
          f"uploaded {len(report.uploaded)} files in {len(report.commits)} commits, "
          f"{len(report.skipped)} already up to date"
          + (f", removed {len(report.deleted)} stale files" if report.deleted else "")
          + (f", left {len(report.stale)} stale files in place (--delete-stale removes them)" if report.stale else ""))
    print(report.url)
    return 0
