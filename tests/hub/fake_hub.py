"""A local stand-in for the Hugging Face Hub: the HTTP API huggingface_hub 2.4.0 uses to upload a
dataset repo without Xet (``HF_HUB_DISABLE_XET=1``), plus ``resolve`` downloads.

Stdlib only, so it never imports huggingface_hub into the test process. Start it, point a
subprocess at it with ``HF_ENDPOINT=hub.url``, then assert on ``hub.requests`` (every request, with
whether it carried an ``Authorization`` header), ``hub.commits`` and ``hub.files(repo_id)``.

Endpoints (``{repo}`` is ``NS/NAME``, ``{rev}`` is URL-quoted):
    GET  /api/agent-harnesses                                empty registry (user-agent detection,
                                                             fetched once a day, unauthenticated)
    GET  /api/whoami-v2
    POST /api/repos/create                                   409 when it exists
    POST /api/validate-yaml                                  (create_commit sends README.md here)
    GET  /api/datasets/{repo}[/revision/{rev}]               repo_info
    GET  /api/datasets/{repo}/refs
    POST /api/datasets/{repo}/branch/{branch}                409 when it exists
    POST /api/datasets/{repo}/preupload/{rev}                uploadMode lfs|regular + remote oid
    GET  /api/datasets/{repo}/tree/{rev}[/{path}]            ?recursive, paginated (Link header)
    POST /api/datasets/{repo}/paths-info/{rev}               form: paths=...
    POST /datasets/{repo}.git/info/lfs/objects/batch         upload action only for missing objects
    PUT  /_lfs/{repo}/{oid}                                  sha256 and size checked
    POST /_lfs/{repo}/{oid}/verify
    POST /api/datasets/{repo}/commit/{rev}                   NDJSON: header, file, lfsFile, deleted*
    GET|HEAD /datasets/{repo}/resolve/{rev}/{path}

Failure injection: :meth:`FakeHub.fail` (next N matching requests get a status, e.g. 429/500) and
:meth:`FakeHub.fail_after` (after K matching requests succeeded, every later one fails: an
interruption that huggingface_hub does not retry, e.g. 403 on LFS PUTs).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_EXTENSIONS = {".tar", ".parquet", ".png", ".webp", ".jpg", ".npy", ".npz", ".safetensors", ".bin", ".zip"}
REGULAR_MAX_BYTES = 10 * 1024 * 1024
_REPO = r"(?P<repo>[^/]+/[^/]+)"


def git_blob_oid(data: bytes) -> str:
    """git's object id of a blob (what the Hub reports as ``oid`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Entry:
    """One file in a commit's tree."""

    size: int
    sha256: str
    lfs: bool
    content: bytes = field(repr=False)

    @property
    def oid(self) -> str:
        return git_blob_oid(lfs_pointer(self.sha256, self.size) if self.lfs else self.content)

    @property
    def remote_oid(self) -> str:
        """What preupload reports: sha256 for LFS files, git blob oid for regular files."""
        return self.sha256 if self.lfs else self.oid


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    trees: dict[str, dict[str, Entry]] = field(default_factory=dict)  # commit oid -> tree
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str  # unquoted, without query string
    query: str
    authorized: bool  # an Authorization header was present
    status: int
    injected: bool  # the status came from fail()/fail_after()
    detail: tuple[str, ...] = ()  # preupload/commit: repo paths; LFS batch: oids; PUT: the oid


def _detail(path: str, body: bytes) -> tuple[str, ...]:
    """What a request was about, for assertions (paths or oids named in its body)."""
    try:
        if "/preupload/" in path:
            return tuple(f["path"] for f in json.loads(body)["files"])
        if path.endswith("/info/lfs/objects/batch"):
            return tuple(o["oid"] for o in json.loads(body)["objects"])
        if "/commit/" in path and path.startswith("/api/"):
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            return tuple(x["value"]["path"] for x in lines if x.get("key") in ("file", "lfsFile"))
        if path.startswith("/_lfs/"):
            return (path.rsplit("/", 2)[-1] if path.endswith("/verify") else path.rsplit("/", 1)[-1],)
    except (ValueError, KeyError, TypeError):
        pass
    return ()


@dataclass(frozen=True)
class Commit:
    repo_id: str
    revision: str
    oid: str
    message: str
    paths: tuple[str, ...]  # added or replaced paths
    lfs_oids: tuple[str, ...]


@dataclass
class _Rule:
    method: str | None
    pattern: re.Pattern[str]
    status: int
    times: int | None  # fail this many times (None: forever once armed)
    after: int = 0  # let this many matching requests succeed first
    seen: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self.pattern.search(path))


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class FakeHub:
    """The fake Hub server. ``token`` is the only accepted bearer token; ``user`` owns new repos."""

    def __init__(self, token: str, *, user: str = "fake-user", page_size: int = 50) -> None:
        self.token, self.user, self.page_size = token, user, page_size
        self.repos: dict[str, Repo] = {}
        self._requests: list[Request] = []
        self._commits: list[Commit] = []
        self._put_oids: list[str] = []
        self._rules: list[_Rule] = []
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- test controls --------------------------------------------------------------------------

    def fail(self, method: str | None, pattern: str, status: int, *, times: int = 1,
             retry_after: int | None = None) -> None:
        """The next ``times`` requests matching ``method`` and the ``pattern`` regex get ``status``."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        with self._lock:
            self._rules.append(_Rule(method, re.compile(pattern), status, times, headers=headers))

    def fail_after(self, method: str | None, pattern: str, successes: int, status: int = 403) -> None:
        """Let ``successes`` matching requests through, then fail every later one with ``status``."""
        with self._lock:
            self._rules.append(_Rule(method, re.compile(pattern), status, None, after=successes))

    def clear_failures(self) -> None:
        with self._lock:
            self._rules.clear()

    def add_repo(self, repo_id: str, *, private: bool = False, repo_type: str = "dataset") -> None:
        """Create a repo directly (as if made earlier by someone else), with an initial commit."""
        ns, name = repo_id.split("/")
        body = json.dumps({"name": name, "organization": ns, "type": repo_type, "private": private}).encode()
        with self._lock:
            self.create_repo({"Authorization": f"Bearer {self.token}"}, body)
            self._commits.pop()

    def put_files(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> None:
        """Commit ``files`` directly (as regular or LFS files, like preupload would decide)."""
        with self._lock:
            repo = self.repos[repo_id]
            tree = dict(repo.trees[repo.branches[revision]])
            for path, data in files.items():
                lfs = PurePosixPath(path).suffix.lower() in LFS_EXTENSIONS
                tree[path] = Entry(len(data), hashlib.sha256(data).hexdigest(), lfs, data)
                if lfs:
                    repo.lfs[tree[path].sha256] = data
            self._new_commit(repo, revision, tree, "put_files", tuple(files), ())
            self._commits.pop()

    def reset_log(self) -> None:
        with self._lock:
            self._requests.clear()
            self._commits.clear()
            self._put_oids.clear()

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def commits(self) -> list[Commit]:
        with self._lock:
            return list(self._commits)

    @property
    def put_oids(self) -> list[str]:
        """sha256 of every LFS object whose PUT succeeded, in order."""
        with self._lock:
            return list(self._put_oids)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Content of every file at ``revision``."""
        with self._lock:
            repo = self.repos[repo_id]
            return {p: e.content for p, e in repo.trees[repo.branches[revision]].items()}

    # -- request handling (called by the handler thread) ----------------------------------------

    def _record(self, req: Request) -> None:
        with self._lock:
            self._requests.append(req)

    def _injected(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                if rule.times is not None:
                    if rule.times <= 0:
                        continue
                    rule.times -= 1
                return rule
        return None

    def _auth(self, headers: Any, *, required: bool) -> bool:
        value = headers.get("Authorization")
        if value is None:
            if required:
                raise HubError(401, "Invalid username or password.")
            return False
        if value != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _repo(self, repo_id: str, authed: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authed):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _head(self, repo: Repo, revision: str) -> str:
        revision = unquote(revision)
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.trees:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _new_commit(self, repo: Repo, branch: str, tree: dict[str, Entry], message: str,
                    paths: tuple[str, ...], lfs_oids: tuple[str, ...]) -> str:
        oid = hashlib.sha1(f"{repo.repo_id}:{next(self._counter)}:{message}".encode()).hexdigest()
        repo.trees[oid] = tree
        repo.branches[branch] = oid
        self._commits.append(Commit(repo.repo_id, branch, oid, message, paths, lfs_oids))
        return oid

    def handle(self, method: str, raw_path: str, query: str, headers: Any, body: bytes) -> tuple[int, dict, bytes]:
        """Route one request; returns (status, headers, body)."""
        path = unquote(raw_path)
        authorized = headers.get("Authorization") is not None
        detail = _detail(path, body)
        rule = self._injected(method, path)
        if rule is not None:
            self._record(Request(method, path, query, authorized, rule.status, True, detail))
            return rule.status, {"Content-Type": "application/json", **rule.headers}, _json_bytes(
                {"error": f"injected failure {rule.status}"})
        try:
            with self._lock:
                status, out_headers, out = self._route(method, raw_path, query, headers, body)
        except HubError as exc:
            status, out_headers, out = exc.status, {"Content-Type": "application/json"}, _json_bytes(
                {"error": str(exc)})
            if exc.code:
                out_headers["X-Error-Code"] = exc.code
            out_headers["X-Error-Message"] = str(exc)
        self._record(Request(method, path, query, authorized, status, False, detail))
        return status, out_headers, out

    def _route(self, method: str, raw_path: str, query: str, headers: Any, body: bytes) -> tuple[int, dict, bytes]:
        for route_method, pattern, func in _ROUTES:
            if route_method != method and not (route_method == "GET" and method == "HEAD"):
                continue
            m = pattern.fullmatch(raw_path)
            if m:
                args = {k: unquote(v) if v is not None else None for k, v in m.groupdict().items()}
                return func(self, method=method, query=parse_qs(query), headers=headers, body=body, **args)
        raise HubError(404, f"no route for {method} {raw_path}")

    # -- endpoints --------------------------------------------------------------------------------

    def agent_harnesses(self, **_: Any) -> tuple[int, dict, bytes]:
        return _ok({"standardEnvVars": [], "harnesses": {}})

    def whoami(self, headers: Any, **_: Any) -> tuple[int, dict, bytes]:
        self._auth(headers, required=True)
        return _ok({"type": "user", "name": self.user, "auth": {"accessToken": {"role": "write"}}})

    def create_repo(self, headers: Any, body: bytes, **_: Any) -> tuple[int, dict, bytes]:
        self._auth(headers, required=True)
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        url = f"{self.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        if repo_id in self.repos:
            return 409, {"Content-Type": "application/json"}, _json_bytes(
                {"error": "You already created this dataset repo", "url": url})
        repo = Repo(repo_id, repo_type, payload.get("visibility") == "private" or bool(payload.get("private")))
        self.repos[repo_id] = repo
        gitattributes = b"*.tar filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"
        entry = Entry(len(gitattributes), hashlib.sha256(gitattributes).hexdigest(), False, gitattributes)
        self._new_commit(repo, "main", {".gitattributes": entry}, "initial commit", (".gitattributes",), ())
        return _ok({"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self, body: bytes, **_: Any) -> tuple[int, dict, bytes]:
        content = json.loads(body).get("content", "")
        if content and not content.startswith("---"):
            return 400, {"Content-Type": "application/json"}, _json_bytes(
                {"errors": [{"message": "no YAML header"}], "warnings": []})
        return _ok({"errors": [], "warnings": []})

    def repo_info(self, headers: Any, repo: str, revision: str | None = None, **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=False))
        sha = self._head(r, revision or "main")
        siblings = [{"rfilename": p} for p in sorted(r.trees[sha])]
        return _ok({"id": r.repo_id, "author": r.repo_id.split("/")[0], "sha": sha, "private": r.private,
                    "disabled": False, "gated": False, "siblings": siblings, "tags": [], "downloads": 0,
                    "likes": 0, "lastModified": "2024-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z"})

    def refs(self, headers: Any, repo: str, **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=False))
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in sorted(r.branches.items())]
        return _ok({"branches": branches, "tags": [], "converts": []})

    def create_branch(self, headers: Any, body: bytes, repo: str, branch: str, **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=True))
        if branch in r.branches:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        r.branches[branch] = self._head(r, start)
        return _ok({})

    def preupload(self, headers: Any, body: bytes, repo: str, revision: str, **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=True))
        head = self._head(r, revision)
        tree = r.trees[head]
        files = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["size"] > 0 and (PurePosixPath(f["path"]).suffix.lower() in LFS_EXTENSIONS
                                     or b"\0" in sample or f["size"] > REGULAR_MAX_BYTES)
            info: dict[str, Any] = {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            if f["path"] in tree:
                info["oid"] = tree[f["path"]].remote_oid
            files.append(info)
        return _ok({"files": files, "commitOid": head})

    def tree(self, headers: Any, query: dict, repo: str, revision: str, path: str | None = None,
             **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=False))
        tree = r.trees[self._head(r, revision)]
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path.strip('/')}/" if path else ""
        if path and not any(p.startswith(prefix) for p in tree):
            raise HubError(404, f"{path} does not exist", "EntryNotFound")
        entries: dict[str, dict] = {}
        for p, entry in sorted(tree.items()):
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            for depth in range(1, len(parts)):
                if not recursive and depth > 1:
                    break
                d = prefix + "/".join(parts[:depth])
                entries.setdefault(d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                       "size": 0, "path": d})
            if recursive or len(parts) == 1:
                entries[p] = _file_json(p, entry)
        items = [entries[k] for k in sorted(entries)]
        cursor = int(query.get("cursor", ["0"])[0])
        page = items[cursor:cursor + self.page_size]
        out_headers = {"Content-Type": "application/json"}
        if cursor + self.page_size < len(items):
            base = f"{self.url}/api/datasets/{r.repo_id}/tree/{quote(revision, safe='')}"
            if path:
                base += "/" + quote(path, safe="")
            nxt = f"{base}?recursive={str(recursive).lower()}&cursor={cursor + self.page_size}"
            out_headers["Link"] = f'<{nxt}>; rel="next"'
        return 200, out_headers, _json_bytes(page)

    def paths_info(self, headers: Any, body: bytes, repo: str, revision: str, **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=False))
        tree = r.trees[self._head(r, revision)]
        paths = parse_qs(body.decode()).get("paths", [])
        return _ok([_file_json(p, tree[p]) for p in paths if p in tree])

    def lfs_batch(self, headers: Any, body: bytes, repo: str, **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=True))
        payload = json.loads(body)
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "only basic uploads are supported")
        objects = []
        for obj in payload["objects"]:
            out: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in r.lfs:
                href = f"{self.url}/_lfs/{r.repo_id}/{obj['oid']}"
                out["authenticated"] = True
                out["actions"] = {"upload": {"href": href, "header": {}},
                                  "verify": {"href": f"{href}/verify", "header": {}}}
            objects.append(out)
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, _json_bytes(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def lfs_put(self, body: bytes, repo: str, oid: str, **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, True)
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "content does not match the sha256 in the URL")
        r.lfs[oid] = body
        self._put_oids.append(oid)
        return 200, {"ETag": f'"{oid}"'}, b""

    def lfs_verify(self, headers: Any, body: bytes, repo: str, oid: str, **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=True))
        payload = json.loads(body)
        if payload.get("oid") != oid or oid not in r.lfs or len(r.lfs[oid]) != payload.get("size"):
            raise HubError(404, f"object {oid} not found or wrong size")
        return _ok({"success": True})

    def commit(self, headers: Any, body: bytes, repo: str, revision: str, **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=True))
        if headers.get("Content-Type", "").split(";")[0] != "application/x-ndjson":
            raise HubError(400, "commit payload must be application/x-ndjson")
        head = self._head(r, revision)
        if unquote(revision) not in r.branches:
            raise HubError(400, "can only commit to a branch")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "first NDJSON line must be the header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != head:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(r.trees[head])
        paths, lfs_oids = [], []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value[
                    "content"].encode()
                tree[value["path"]] = Entry(len(data), hashlib.sha256(data).hexdigest(), False, data)
                paths.append(value["path"])
            elif key == "lfsFile":
                oid = value["oid"]
                if value.get("algo", "sha256") != "sha256" or oid not in r.lfs:
                    raise HubError(422, f"LFS object {oid} for {value['path']} was not uploaded")
                data = r.lfs[oid]
                if "size" in value and value["size"] != len(data):
                    raise HubError(422, f"size mismatch for {value['path']}")
                tree[value["path"]] = Entry(len(data), oid, True, data)
                paths.append(value["path"])
                lfs_oids.append(oid)
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in tree if p.startswith(prefix)]:
                    del tree[p]
            else:
                raise HubError(400, f"unknown commit line key {key!r}")
        oid = self._new_commit(r, unquote(revision), tree, header.get("summary", ""), tuple(paths), tuple(lfs_oids))
        prefix = "datasets/" if r.repo_type == "dataset" else ""
        return _ok({"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{prefix}{r.repo_id}/commit/{oid}",
                    "hookOutput": ""})

    def resolve(self, method: str, headers: Any, repo: str, revision: str, path: str,
                **_: Any) -> tuple[int, dict, bytes]:
        r = self._repo(repo, self._auth(headers, required=False))
        head = self._head(r, revision)
        entry = r.trees[head].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        out_headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": head,
                       "ETag": f'"{entry.remote_oid}"', "Content-Length": str(entry.size)}
        if entry.lfs:
            out_headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        return 200, out_headers, entry.content


def _file_json(path: str, entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
    if entry.lfs:
        out["lfs"] = {"oid": entry.sha256, "size": entry.size,
                      "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
    return out


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _ok(obj: Any) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, _json_bytes(obj)


_ROUTES: list[tuple[str, re.Pattern[str], Any]] = [
    (m, re.compile(p), f)
    for m, p, f in [
        ("GET", r"/api/agent-harnesses", FakeHub.agent_harnesses),
        ("GET", r"/api/whoami-v2", FakeHub.whoami),
        ("POST", r"/api/repos/create", FakeHub.create_repo),
        ("POST", r"/api/validate-yaml", FakeHub.validate_yaml),
        ("GET", rf"/api/datasets/{_REPO}", FakeHub.repo_info),
        ("GET", rf"/api/datasets/{_REPO}/revision/(?P<revision>[^/]+)", FakeHub.repo_info),
        ("GET", rf"/api/datasets/{_REPO}/refs", FakeHub.refs),
        ("POST", rf"/api/datasets/{_REPO}/branch/(?P<branch>[^/]+)", FakeHub.create_branch),
        ("POST", rf"/api/datasets/{_REPO}/preupload/(?P<revision>[^/]+)", FakeHub.preupload),
        ("GET", rf"/api/datasets/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?", FakeHub.tree),
        ("POST", rf"/api/datasets/{_REPO}/paths-info/(?P<revision>[^/]+)", FakeHub.paths_info),
        ("POST", rf"/api/datasets/{_REPO}/commit/(?P<revision>[^/]+)", FakeHub.commit),
        ("POST", rf"/datasets/{_REPO}\.git/info/lfs/objects/batch", FakeHub.lfs_batch),
        ("PUT", rf"/_lfs/{_REPO}/(?P<oid>[0-9a-f]{{64}})", FakeHub.lfs_put),
        ("POST", rf"/_lfs/{_REPO}/(?P<oid>[0-9a-f]{{64}})/verify", FakeHub.lfs_verify),
        ("GET", rf"/datasets/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", FakeHub.resolve),
    ]
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return b"".join(self._chunks())
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield self.rfile.read(size)
            self.rfile.readline()

    def _serve(self) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        status, headers, out = self.server_hub.handle(self.command, parts.path, parts.query, self.headers, body)
        self.send_response(status)
        headers = dict(headers)
        headers.setdefault("Content-Length", str(len(out)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve
