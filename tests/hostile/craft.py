"""The hostile-input set: crafted corpora, manifests and teacher checkpoints, each built in a fresh folder.

Every case lays out a folder ``R``::

    R/corpus/     a tiny corpus (2 classes x 1 shard x 2 images, 16 px) with one part crafted
    R/outside/    the sentinel: a secret file, a real teacher and a pickle whose unpickling writes R/outside/MARKER
    R/M/          a run manifest folder (teacher checkpoints, manifest.yaml)
    R/work/       the working directory of the command

and names the ``smi-synth`` command that must refuse it, and a fragment its reason must contain. The files
are generated (not committed) so the set stays readable and every byte is explained here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import shutil
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import yaml

from pipeline.corpus.index import refresh_index
from pipeline.corpus.layout import CorpusLayout
from pipeline.corpus.tar_io import iter_tar_records
from pipeline.teachers.checkpoint import META_KEY, save_checkpoint
from tests.conftest import build_corpus

ARCH = "vit_tiny_patch16_224"
ARCH_KWARGS = {"img_size": 16, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "num_classes": 2}
SHARD = "data/train-000000.tar"
MARKER = "MARKER"  # R/outside/MARKER appears only if a crafted pickle was unpickled


@dataclass(frozen=True)
class Case:
    """One hostile input: what ``build(R)`` crafts, the CLI arguments that read it, and the reason's fragment."""

    name: str
    build: Callable[[Path], None]
    argv: Callable[[Path], list[str]]
    reason: str
    cwd: str = "work"


class _Unpickled:
    """Unpickling this creates the marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def marker_pickle(root: Path) -> bytes:
    return pickle.dumps(_Unpickled(root / "outside" / MARKER))


def tiny_teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(ARCH, pretrained=False, **ARCH_KWARGS).eval()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- the base


def base(root: Path) -> None:
    """The good layout every case starts from (a good corpus whose own teacher is a real checkpoint)."""
    for folder in ("outside", "M", "work"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "outside" / "secret.txt").write_text("not for corpora\n")
    teacher = save_checkpoint(tiny_teacher(), root / "outside" / "evil.safetensors", arch=ARCH,
                              model_kwargs=ARCH_KWARGS, class_names=["class0", "class1"], license=None)
    (root / "outside" / "evil.pth").write_bytes(marker_pickle(root))
    layout = build_corpus(root / "corpus", num_classes=2, per_shard=2, image_size=16)
    own = shutil.copy(teacher, root / "corpus" / "teacher.safetensors")
    set_teacher(layout, "teacher.safetensors", sha256(Path(own)))


def set_teacher(layout: CorpusLayout, spec: str, sha: str | None) -> None:
    """manifest.json's teacher section, as a run records a checkpoint teacher."""
    path = Path(layout.root) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["spec"]["teacher"] = {"spec": spec, "checkpoint_sha256": sha, "num_classes": 2, "img_size": [16, 16],
                                   "patch_size": [4, 4], "mean": [0.5] * 3, "std": [0.25] * 3}
    path.write_text(json.dumps(manifest))


# ---------------------------------------------------------------------------------------------- crafting tools


def members(root: Path, shard: str = SHARD) -> list[tuple[str, bytes]]:
    """The (name, bytes) members of a good shard, in order."""
    with open(root / "corpus" / shard, "rb") as f:
        return [(f"{key}.{ext}", data) for key, group in iter_tar_records(f) for ext, data in group.items()]


def tar_of(entries: list[tarfile.TarInfo | tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()


def special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info


def replace_shard(root: Path, data: bytes, *, recorded_bytes: int | None = None, shard: str = SHARD) -> None:
    """Put ``data`` in place of the shard and record it in its stats as an attacker would (size and sha256
    match, so only the reader's own bounds stand between it and the machine)."""
    (root / "corpus" / shard).write_bytes(data)
    stats_path = root / "corpus" / "stats" / Path(shard).with_suffix(".json").name
    stats = json.loads(stats_path.read_text())
    stats.update(tar_bytes=len(data) if recorded_bytes is None else recorded_bytes,
                 tar_sha256=hashlib.sha256(data).hexdigest())
    stats_path.write_text(json.dumps(stats))
    refresh_index(CorpusLayout(root / "corpus"), full=True)


def replace_member(root: Path, suffix: str, data: bytes) -> None:
    """The first sample's member ending in ``suffix`` replaced by ``data``."""
    items = members(root)
    first = next(i for i, (n, _) in enumerate(items) if n.endswith(suffix))
    items[first] = (items[first][0], data)
    replace_shard(root, tar_of(items))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with one tiny data chunk."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A float16 .npy whose header claims ``shape`` but holds 8 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f2", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 8


def npy_of_objects(root: Path) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([_Unpickled(root / "outside" / MARKER)], dtype=object), allow_pickle=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- the cases


def _oversized_member(root: Path) -> None:
    name, _ = members(root)[0]
    info = tarfile.TarInfo(name)
    info.size = 1 << 30  # the header claims 1 GiB; the shard holds a few KiB
    head = info.tobuf(tarfile.USTAR_FORMAT)
    replace_shard(root, head + b"\0" * 4096)


def _traversal(name: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        escape = name.format(outside=root / "outside")
        replace_shard(root, tar_of([(escape, b"escaped"), *members(root)]))
    return build


def _link(kind: bytes, target: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        items = members(root)
        first = items[0][0]
        link = target.format(outside=root / "outside")
        replace_shard(root, tar_of([special(first, kind, link), *items[1:]]))
    return build


def _truncated(root: Path) -> None:
    data = tar_of(members(root))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        png = next(m for m in tar if m.name.endswith(".png"))
    replace_shard(root, data[: png.offset_data + png.size // 2])  # cut in the middle of an image


def _truncated_at_a_member(root: Path) -> None:
    items = members(root)
    replace_shard(root, tar_of(items[: len(items) // 2]))  # a whole, valid tar of the first sample only


def _truncated_gzip(root: Path) -> None:
    squeezed = gzip.compress(tar_of(members(root)))
    replace_shard(root, squeezed[: len(squeezed) // 2])


def _pax_bomb(root: Path) -> None:
    items = members(root)
    info = tarfile.TarInfo(items[0][0])
    info.size = len(items[0][1])
    info.pax_headers = {"comment": "x" * (2 << 20)}  # a 2 MiB extended header
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(items[0][1]))
    replace_shard(root, buf.getvalue())


def _longer_than_recorded(root: Path) -> None:
    data = tar_of(members(root))
    replace_shard(root, data, recorded_bytes=1024)


def _bogus_parquet(root: Path) -> None:
    path = root / "corpus" / "metadata" / "train-000000.parquet"
    path.write_bytes(b"PAR1" + b"\xff" * 200 + b"PAR1")
    stats_path = root / "corpus" / "stats" / "train-000000.json"
    stats = json.loads(stats_path.read_text())
    stats.update(parquet_bytes=path.stat().st_size, parquet_sha256=sha256(path))
    stats_path.write_text(json.dumps(stats))


def _parquet_over_cap(root: Path) -> None:
    stats_path = root / "corpus" / "stats" / "train-000000.json"
    stats = json.loads(stats_path.read_text())
    stats["parquet_bytes"] = 16  # the file is larger than its stats promise
    stats_path.write_text(json.dumps(stats))


def _corpus_teacher(spec: str, with_sha: bool = True) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        evil = root / "outside" / "evil.safetensors"
        set_teacher(CorpusLayout(root / "corpus"), spec.format(outside=root / "outside"),
                    sha256(evil) if with_sha else None)
    return build


def _run_manifest(root: Path, teacher: str, **fields: object) -> Path:
    path = root / "M" / "manifest.yaml"
    path.write_text(yaml.safe_dump({"name": "hostile", "teacher": teacher, "classes": [0, 1], "images_per_class": 1,
                                    "images_per_shard": 1, "device": "cpu", "inversion": {"method": "smi",
                                                                                          "iterations": 2},
                                    **fields}))
    return path


def _sidecar_teacher(key: str) -> Callable[[Path], None]:
    """M/ft.pth (plain weights) with a Hub-style config.json whose model_args add ``key`` -> the pickle."""
    def build(root: Path) -> None:
        torch.save(tiny_teacher().state_dict(), root / "M" / "ft.pth")
        args = {**ARCH_KWARGS, key: str(root / "outside" / "evil.pth")}
        if key == "pretrained_cfg_overlay":
            args[key] = {"file": str(root / "outside" / "evil.pth")}
        (root / "M" / "config.json").write_text(json.dumps({"architecture": ARCH, "model_args": args}))
        _run_manifest(root, "ft.pth")
    return build


def _metadata_teacher(root: Path) -> None:
    """M/meta.safetensors whose metadata asks timm to build with pretrained=True and a local checkpoint."""
    from safetensors.torch import save_file

    config = {"architecture": ARCH, "num_classes": 2,
              "model_args": {**ARCH_KWARGS, "pretrained": True, "checkpoint_path": str(root / "outside" / "evil.pth")}}
    tensors = {k: v.contiguous() for k, v in tiny_teacher().state_dict().items()}
    save_file(tensors, str(root / "M" / "meta.safetensors"), metadata={META_KEY: json.dumps(config)})
    _run_manifest(root, "meta.safetensors")


def _pickle_teacher(root: Path) -> None:
    """M/evil.pth: a pickle that writes the marker, with a sidecar so it looks like a teacher."""
    (root / "M" / "evil.pth").write_bytes(marker_pickle(root))
    (root / "M" / "evil.json").write_text(json.dumps({"architecture": ARCH, "model_args": ARCH_KWARGS}))


def _escaping_output(root: Path) -> None:
    shutil.copy(root / "corpus" / "teacher.safetensors", root / "M" / "vit.safetensors")
    _run_manifest(root, "vit.safetensors", output="../../escaped-out")


DISTILL = ["--student", "toy-student", "--steps", "1", "--batch-size", "2"]


def _distill(root: Path) -> list[str]:
    return ["distill", str(root / "corpus"), "--stored-labels", *DISTILL]


def _distill_own_teacher(root: Path) -> list[str]:
    return ["distill", str(root / "corpus"), *DISTILL]


def _verify(root: Path) -> list[str]:
    return ["verify", str(root / "corpus")]


def _run(root: Path) -> list[str]:
    return ["run", str(root / "M" / "manifest.yaml"), "--out", str(root / "work" / "out")]


def _run_as_written(root: Path) -> list[str]:
    return ["run", str(root / "M" / "manifest.yaml")]


def _teacher_flag(spec: str) -> Callable[[Path], list[str]]:
    return lambda root: ["distill", str(root / "corpus"), "--teacher", str(root / "M" / spec), *DISTILL]


def _quantize_model(spec: str) -> Callable[[Path], list[str]]:
    return lambda root: ["quantize", str(root / "corpus"), "--model", str(root / "M" / spec), "--calib-images", "2"]


CASES: list[Case] = [
    # crafted shard tars, read by distill (the training loader) and by verify
    Case("tar-oversized-member", _oversized_member, _distill, "1073741824 bytes, over the 4608-byte member cap"),
    Case("tar-oversized-member", _oversized_member, _verify, "1073741824 bytes, over the 4608-byte member cap"),
    Case("tar-traversal-name", _traversal("../../outside/escape.png"), _distill, "not named KEY.EXT"),
    Case("tar-absolute-name", _traversal("{outside}/escape.png"), _distill, "not named KEY.EXT"),
    Case("tar-symlink", _link(tarfile.SYMTYPE, "{outside}/secret.txt"), _distill, "not a regular file"),
    Case("tar-symlink", _link(tarfile.SYMTYPE, "{outside}/secret.txt"), _verify, "non-file member"),
    Case("tar-hardlink", _link(tarfile.LNKTYPE, "../../outside/secret.txt"), _distill, "not a regular file"),
    Case("tar-char-device", _link(tarfile.CHRTYPE, ""), _distill, "not a regular file"),
    Case("tar-fifo", _link(tarfile.FIFOTYPE, ""), _distill, "not a regular file"),
    Case("tar-truncated", _truncated, _distill, "unreadable tar"),
    Case("tar-truncated", _truncated, _verify, "unreadable tar"),
    Case("tar-truncated-at-a-member", _truncated_at_a_member, _distill, "holds 1 samples, its stats say 2"),
    Case("tar-truncated-gzip", _truncated_gzip, _distill, "unreadable tar"),
    Case("tar-truncated-gzip", _truncated_gzip, _verify, "unreadable tar"),
    Case("tar-pax-header-bomb", _pax_bomb, _distill, "pax header, over the"),
    Case("tar-longer-than-recorded", _longer_than_recorded, _distill, "1024-byte"),
    # crafted members
    Case("png-decompression-bomb", lambda r: replace_member(r, ".png", png_header_only(100_000, 100_000)),
         _distill, "decompression bomb"),
    Case("npy-pickled-objects", lambda r: replace_member(r, ".logits.npy", npy_of_objects(r)), _distill,
         "would need unpickling"),
    Case("npy-header-claims-1e12", lambda r: replace_member(r, ".logits.npy", npy_header_only((10**12,))),
         _distill, ".npy header claims"),
    Case("json-not-json", lambda r: replace_member(r, ".json", b"\xff{not json"), _distill, "cannot decode"),
    # crafted parquet metadata
    Case("parquet-bogus", _bogus_parquet, _verify, "unreadable parquet"),
    Case("parquet-over-recorded-size", _parquet_over_cap, _verify, "over its 16-byte cap"),
    # crafted manifest.json teacher paths (each names a real teacher with the right sha256, outside the corpus)
    Case("manifest-teacher-absolute", _corpus_teacher("{outside}/evil.safetensors"), _distill_own_teacher,
         "outside the corpus's folders"),
    Case("manifest-teacher-dotdot", _corpus_teacher("../outside/evil.safetensors"), _distill_own_teacher,
         "outside the corpus's folders"),
    Case("manifest-teacher-no-sha256", _corpus_teacher("teacher.safetensors", with_sha=False), _distill_own_teacher,
         "records no sha256"),
    # a run manifest whose output climbs out of its folder
    Case("manifest-output-dotdot", _escaping_output, _run_as_written, "output"),
    # teacher checkpoints whose configs would make timm read a pickle
    Case("config-json-checkpoint-path", _sidecar_teacher("checkpoint_path"), _run, "'checkpoint_path'"),
    Case("config-json-checkpoint-path", _sidecar_teacher("checkpoint_path"), _teacher_flag("ft.pth"),
         "'checkpoint_path'"),
    Case("config-json-checkpoint-path", _sidecar_teacher("checkpoint_path"), _quantize_model("ft.pth"),
         "'checkpoint_path'"),
    Case("config-json-pretrained-cfg-overlay", _sidecar_teacher("pretrained_cfg_overlay"), _run,
         "'pretrained_cfg_overlay'"),
    Case("safetensors-metadata-pretrained", _metadata_teacher, _run, "'pretrained'"),
    Case("pickle-teacher", _pickle_teacher, _teacher_flag("evil.pth"), "weights_only"),
]
