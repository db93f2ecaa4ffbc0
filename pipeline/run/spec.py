"""The run manifest: YAML parsed into one typed, validated :class:`RunSpec` (see manifests/README.md).

Every problem with a manifest surfaces as a one-line :class:`~pipeline.errors.UserError` that names
the file and the field, e.g. ``demo.yaml: images_per_class: must be > 0, got 0``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.checks import is_int
from pipeline.checksums import file_sha256
from pipeline.corpus.storage import is_url
from pipeline.errors import UserError
from pipeline.run.engine_schema import (
    SMI_ONLY_FIELDS,
    InversionSpec,
    ManifestSection,
    PositiveInt,
    build_config,
    inversion_fields,
)
from pipeline.run.manifest_errors import format_validation_error, show, yaml_message
from smi_core.config import InversionConfig
from smi_core.selection import images_per_target, targets_for
from smi_core.version import ENGINE_VERSION

if TYPE_CHECKING:
    from pipeline.teachers.loading import TeacherInfo

log = logging.getLogger(__name__)

# Bump when the hashed fields change (it is itself hashed). Version 3 hashes the engine version
# (smi_core.version), names a timm teacher by the pretrained tag timm resolves it to (timm:NAME ->
# timm:NAME.TAG) and leaves the SMI-only fields out of dense runs' hashes (a dense inversion ignores them).
# Hashes of versions 1 and 2 named engine 1, which no longer runs: such corpora cannot be resumed.
HASH_VERSION = 3
# The inversion fields always hashed. Any other inversion field (added later: stopped patches, saliency,
# zoom, colour shift, ...) is hashed only when it differs from the engine's own default (smi_core.config),
# which reproduces what the engine did before the field existed: existing hashes stay valid. Paths of leaves
# (the schedule's two lists too, so a field added to the schedule is hashed only away from its default).
ALWAYS_HASHED = frozenset({
    "method", "iterations", "batch_size", "lr", "betas", "schedule.iterations", "schedule.ratios", "keep_best",
    "loss.ce", "loss.tv_l1", "loss.tv_l2", "loss.l2", "loss.bn_prior", "loss.patch_entropy",
    "augment.enabled", "augment.max_roll_fraction", "augment.flip",
})
DEFAULT_MAX_BATCH = 64  # targets in the forward of a default batch (see RunSpec.batch_size)
# Size limits, checked arithmetically before anything is enumerated (see _check_sizes):
MAX_IMAGES_PER_CLASS = 10_000_000  # sample keys hold a 7-digit per-class index (c00042-i0000123)
MAX_SHARDS = 10_000  # one tar per shard in data/, and the layout stays within 10,000 files per folder

NonNegNumber = Annotated[float, Strict(), Field(ge=0)]
Text = Annotated[StrictStr, Field(min_length=1)]

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class ClassRange(ManifestSection):
    """Half-open range of class ids ``[start, stop)``."""

    start: Annotated[StrictInt, Field(ge=0)]
    stop: Annotated[StrictInt, Field(ge=0)]


class ResourcesSpec(ManifestSection):
    """Scheduling hints for the runner; they never change the corpus bytes."""

    workers: Union[Literal["auto"], StrictInt] = "auto"
    gpus_per_worker: NonNegNumber | None = None
    cpus_per_worker: Annotated[float, Strict(), Field(gt=0)] | None = None
    # a starting worker reporting no progress for this long is stuck (a loading teacher keeps reporting)
    worker_start_timeout_s: Annotated[float, Strict(), Field(gt=0)] = 900.0
    lease_ttl_s: Annotated[float, Strict(), Field(gt=0)] = 60.0  # a driver silent this long loses the corpus

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, v: Any) -> Any:
        if v == "auto" or (is_int(v) and v > 0):
            return v
        raise ValueError(f"must be 'auto' or an integer > 0, got {show(v)}")


class HubSpec(ManifestSection):
    """Where ``smi-synth publish`` uploads the corpus."""

    repo_id: Text
    private: StrictBool = False
    license: Text | None = None

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, v: str) -> str:
        if not REPO_ID.match(v):
            raise ValueError(f"must look like 'namespace/name', got {show(v)}")
        return v


class Manifest(ManifestSection):
    """The manifest exactly as written, type-checked, with defaults filled in."""

    name: Text | None = None
    teacher: Text
    classes: Union[Literal["all"], list[int], ClassRange] = "all"
    images_per_class: PositiveInt
    images_per_shard: PositiveInt
    inversion: InversionSpec = Field(default_factory=InversionSpec)
    image_format: Literal["png", "webp"] = "png"
    seed: Annotated[StrictInt, Field(ge=0, lt=2**63)] = 0
    output: Text | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    hub: HubSpec | None = None
    license: Text | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v: Any) -> Any:
        if v == "all":
            return v
        if isinstance(v, list):
            if not v:
                raise ValueError("must not be an empty list")
            for c in v:
                if not is_int(c) or c < 0:
                    raise ValueError(f"class ids must be integers >= 0, got {show(c)}")
            dup = [c for c, n in Counter(v).items() if n > 1]
            if dup:
                raise ValueError(f"duplicate class id {dup[0]}")
            return v
        if isinstance(v, dict):
            unknown = sorted(set(map(str, v)) - {"start", "stop"})
            if unknown:
                raise ValueError(f"unknown field '{unknown[0]}' (a range has only start and stop)")
            for key in ("start", "stop"):
                if key not in v:
                    raise ValueError(f"a range needs '{key}'")
                if not is_int(v[key]) or v[key] < 0:
                    raise ValueError(f"{key}: must be an integer >= 0, got {show(v[key])}")
            if v["start"] >= v["stop"]:
                raise ValueError(f"start must be < stop (half-open range), got start={v['start']} stop={v['stop']}")
            return ClassRange(start=v["start"], stop=v["stop"])
        raise ValueError(f"expected 'all', a list of class ids or {{start, stop}}, got {show(v)}")

    @field_validator("images_per_class")
    @classmethod
    def _images_per_class(cls, v: int) -> int:
        if v > MAX_IMAGES_PER_CLASS:
            raise ValueError(f"must be <= {MAX_IMAGES_PER_CLASS:,} (sample keys hold a 7-digit per-class "
                             f"index), got {v:,}")
        return v

    @model_validator(mode="after")
    def _batch(self) -> Manifest:
        b = self.inversion.batch_size
        if b is not None and b > self.images_per_shard:
            raise ValueError(
                f"inversion.batch_size: must be <= images_per_shard ({self.images_per_shard}), got {b}"
            )
        return self


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A validated manifest bound to its teacher, class list and output folder."""

    manifest: Manifest
    name: str
    teacher_spec: str  # "timm:NAME", "toy", or an absolute checkpoint path
    teacher: TeacherInfo
    classes: tuple[int, ...]  # sorted, validated against the teacher's class count
    output: Path | str  # an absolute folder, or an object-storage URL (``s3://bucket/corpus``)
    source: Path | None = None  # the manifest file, when loaded from one

    # --- convenience views -------------------------------------------------------------------
    @property
    def images_per_class(self) -> int:
        return self.manifest.images_per_class

    @property
    def images_per_shard(self) -> int:
        return self.manifest.images_per_shard

    @property
    def seed(self) -> int:
        return self.manifest.seed

    @property
    def image_format(self) -> str:
        return self.manifest.image_format

    @property
    def dtype(self) -> str:
        return self.manifest.dtype

    @property
    def device(self) -> str:
        return self.manifest.device

    @property
    def method(self) -> str:
        return self.manifest.inversion.method

    @property
    def resources(self) -> ResourcesSpec:
        return self.manifest.resources

    @property
    def hub(self) -> HubSpec | None:
        return self.manifest.hub

    @property
    def batch_size(self) -> int:
        """Images inverted together; default ``min(images_per_shard, images_per_class, 64 targets' images)``
        (a rebirth run yields several images per target, so its default batch puts 64 targets in the forward
        as dense's does)."""
        b = self.manifest.inversion.batch_size
        if b is not None:
            return b
        return min(self.images_per_shard, self.images_per_class, DEFAULT_MAX_BATCH * self.images_per_target)

    @property
    def images_per_target(self) -> int:
        """Images one inversion yields per target (rebirth: one per stop and the final image; else 1)."""
        return images_per_target(self.inversion_config().selection)

    @property
    def targets_per_call(self) -> int:
        """Targets in the teacher's forward of one engine call: ``pack_batches`` batches of
        ``ceil(batch_size / images_per_target)`` targets (what GPU memory scales with)."""
        return targets_for(self.inversion_config().selection, self.batch_size) * self.pack_batches

    @property
    def pack_batches(self) -> int:
        """Batches of one shard inverted together by one engine call (``smi_core.invert_packed``)."""
        return self.manifest.inversion.pack_batches

    @property
    def license(self) -> str:
        """The corpus licence: the manifest's, else the teacher's, else ``other``."""
        return self.manifest.license or self.teacher.license or "other"

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of ``self.classes`` (in that order)."""
        names = self.teacher.class_names
        if len(names) != self.teacher.num_classes:
            return tuple(f"class_{c}" for c in self.classes)
        return tuple(str(names[c]) for c in self.classes)

    @property
    def shards_per_class(self) -> int:
        return -(-self.images_per_class // self.images_per_shard)

    @property
    def num_images(self) -> int:
        return len(self.classes) * self.images_per_class

    @property
    def num_shards(self) -> int:
        return len(self.classes) * self.shards_per_class

    @cached_property
    def checkpoint_sha256(self) -> str | None:
        """sha256 of the teacher checkpoint file (``None`` for timm and toy teachers); computed once."""
        if not _is_checkpoint(self.teacher_spec):
            return None

        return file_sha256(Path(self.teacher_spec))

    @property
    def recorded_teacher_path(self) -> str:
        """A checkpoint teacher as ``manifest.json`` records it (published, so never absolute): the path the
        manifest gave, relative to the manifest's folder, when the file lies inside that folder, else the
        file name alone. ``distill`` looks for it the same way (:mod:`pipeline.evaluate.common`). Not hashed."""
        raw = Path(self.manifest.teacher).expanduser()
        rel: Path | None = Path(os.path.normpath(raw)) if not raw.is_absolute() else None
        if rel is None and self.source is not None:
            path = Path(self.teacher_spec)
            for base in {self.source.parent, self.source.parent.resolve()}:
                if path.is_relative_to(base):
                    rel = path.relative_to(base)
        if rel is None or ".." in rel.parts or rel.is_absolute() or not rel.parts:
            return Path(self.teacher_spec).name
        return rel.as_posix()

    # --- conversions ---------------------------------------------------------------------------
    def inversion_config(self) -> InversionConfig:
        """The engine's typed config (already validated by load_spec): the manifest's fields over the
        recommended recipe's."""
        return build_config(self.manifest.inversion)

    def _inversion_dict(self, *, hashed: bool = False) -> dict[str, Any]:
        """The resolved inversion section; with ``hashed``, as the spec hash reads it."""
        d = inversion_fields(self.inversion_config(), batch_size=self.batch_size, pack_batches=self.pack_batches)
        if not hashed:
            return d
        engine = _engine_defaults()
        for path in _leaf_paths(d):  # a field added later, at the engine's default: not hashed
            if path not in ALWAYS_HASHED and _get(d, path) == _get(engine, path):
                _pop(d, path)
        if d["method"] == "dense":
            for name in SMI_ONLY_FIELDS:
                d.pop(name, None)
        return d

    def with_recorded_recipe(self, corpus_manifest: dict[str, Any]) -> RunSpec:
        """For a resume: this spec with every inversion field the manifest leaves out set to the value the
        corpus recorded (``manifest.json``'s resolved ``spec.inversion``).

        A corpus started under older recommended defaults keeps the recipe it was made with, so a resume
        neither mixes recipes nor is refused for a default that changed; a field the manifest sets wins,
        and the runner's spec-hash check then names any real difference. Returns ``self`` when the corpus
        records no inversion section this version can read. Logs a warning naming the fields whose
        recorded value differs from today's recommended one.
        """
        recorded = (corpus_manifest.get("spec") or {}).get("inversion")
        if not isinstance(recorded, dict) or self.matches_hash(corpus_manifest.get("spec_hash")):
            return self
        inv = self.manifest.inversion
        not_recipe = {"method": inv.method, "iterations": inv.iterations, "batch_size": inv.batch_size,
                      "pack_batches": inv.pack_batches}
        # engine defaults for what an older corpus did not record yet, then its record, then the manifest
        data = _deep_merge(_deep_merge(_engine_defaults(), recorded), inv.model_dump(exclude_unset=True))
        data.update(not_recipe)  # not recipe fields: always the manifest's
        try:
            inversion = InversionSpec.model_validate(data)
            build_config(inversion)
        except (ValidationError, ValueError) as exc:
            log.debug("cannot adopt the recorded inversion settings: %s", exc)
            return self
        adopted = dataclasses.replace(self, manifest=self.manifest.model_copy(update={"inversion": inversion}))
        if adopted.matches_hash(corpus_manifest.get("spec_hash")):
            today, then = self._inversion_dict(), adopted._inversion_dict()
            changed = [f"{p} {show(_get(then, p))} (default now {show(_get(today, p))})"
                       for p in _leaf_paths(then) if _get(then, p) != _get(today, p)]
            log.warning("%s: resuming with the settings the corpus was started with, not today's defaults: %s; "
                        "use another output folder for a corpus with today's defaults", self.name, "; ".join(changed))
        return adopted

    def _teacher_identity(self) -> dict[str, Any]:
        if _is_checkpoint(self.teacher_spec):
            return {"kind": "checkpoint", "sha256": self.checkpoint_sha256}
        if self.teacher_spec == "toy":
            return {"kind": "toy", "id": self.teacher.teacher_id}
        # a timm teacher is named with its resolved pretrained tag, not as written
        return {"kind": "timm", "id": self.teacher.identity}

    def hashed_fields(self) -> dict[str, Any]:
        """Exactly the fields that determine the corpus bytes (the input of :meth:`spec_hash`)."""
        return {
            "hash_version": HASH_VERSION,
            "teacher": self._teacher_identity(),
            "classes": list(self.classes),
            "images_per_class": self.images_per_class,
            "images_per_shard": self.images_per_shard,
            "inversion": self._inversion_dict(hashed=True),
            "image_format": self.image_format,
            "seed": self.seed,
            "dtype": self.dtype,
            "engine_version": ENGINE_VERSION,
        }

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`hashed_fields` (not output, resources, hub, name)."""
        canon = json.dumps(self.hashed_fields(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canon.encode()).hexdigest()

    def matches_hash(self, recorded: str | None) -> bool:
        """Whether a corpus recorded with spec hash ``recorded`` is this spec's."""
        return recorded is not None and recorded == self.spec_hash()

    def hash_differences(self, recorded: dict[str, Any]) -> list[str]:
        """``field: recorded -> this spec`` for each hashed field that differs from ``recorded``
        (a manifest's ``hashed_fields``), dotted for nested ones; empty when they agree."""
        return _differences(recorded, self.hashed_fields())

    def resolved(self) -> dict[str, Any]:
        """Fully resolved, JSON-able spec: defaults filled in, teacher, class list and names, hash."""
        t = self.teacher
        hub = self.hub.model_dump(mode="json") if self.hub else None
        if hub is not None and hub["license"] is None:
            hub["license"] = self.license
        return {
            "name": self.name,
            "source": self.source.name if self.source else None,  # no absolute paths: manifest.json is published
            "teacher": {
                "spec": self.recorded_teacher_path if _is_checkpoint(self.teacher_spec) else self.teacher_spec,
                "id": t.teacher_id,
                "resolved_id": t.identity,
                "pretrained_tag": t.pretrained_tag,
                "checkpoint_sha256": self.checkpoint_sha256,
                "num_classes": t.num_classes,
                "img_size": list(t.img_size),
                "patch_size": list(t.patch_size),
                "mean": list(t.mean),
                "std": list(t.std),
                "license": t.license,
                "embed_dim": t.embed_dim,
                "depth": t.depth,
                "num_heads": t.num_heads,
                "mlp_ratio": t.mlp_ratio,
                "num_prefix_tokens": t.num_prefix_tokens,
            },
            "classes": list(self.classes),
            "class_names": list(self.class_names),
            "images_per_class": self.images_per_class,
            "images_per_shard": self.images_per_shard,
            "shards_per_class": self.shards_per_class,
            "num_shards": self.num_shards,
            "num_images": self.num_images,
            "inversion": self._inversion_dict(),
            "image_format": self.image_format,
            "seed": self.seed,
            "dtype": self.dtype,
            "device": self.device,
            "resources": self.resources.model_dump(mode="json"),
            "hub": hub,
            "license": self.license,
            "engine_version": ENGINE_VERSION,
            "hashed_fields": self.hashed_fields(),
            "spec_hash": self.spec_hash(),
        }

    def with_output(self, path: str | os.PathLike[str]) -> RunSpec:
        """A copy writing to ``path`` (``--out``: a folder relative to the working directory, or an
        object-storage URL; same spec hash)."""
        if is_url(path):
            return dataclasses.replace(self, output=str(path).rstrip("/"))
        return dataclasses.replace(self, output=Path(os.path.abspath(Path(path).expanduser())))


# --- loading -------------------------------------------------------------------------------------


def load_spec(path: str | os.PathLike[str]) -> RunSpec:
    """Read, parse and validate a manifest file; every problem raises a one-line ``UserError``."""
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{label}: cannot read manifest: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.load(text, Loader=_ManifestLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UserError(f"{label}: invalid YAML: {yaml_message(exc)}") from None
    return spec_from_dict(data, base_dir=path.parent, label=label, default_name=path.stem, source=path.absolute())


def spec_from_dict(
    data: Any,
    *,
    base_dir: str | os.PathLike[str] = ".",
    label: str = "manifest",
    default_name: str | None = None,
    source: Path | None = None,
) -> RunSpec:
    """Validate already-parsed manifest data; relative paths resolve against ``base_dir``."""
    if data is None:
        raise UserError(f"{label}: manifest is empty")
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{label}: {format_validation_error(exc, Manifest)}") from None
    engine_error = _engine_error(manifest)
    if engine_error:
        raise UserError(f"{label}: {engine_error}")
    known = manifest.classes  # sizes are checked before the teacher is described (which imports timm)
    _check_sizes(manifest, len(known) if isinstance(known, list) else
                 known.stop - known.start if isinstance(known, ClassRange) else None, label)
    base = Path(base_dir).absolute().resolve()
    name = manifest.name or default_name or "run"
    output = _resolve_output(manifest.output or f"{name}-out", base, label)
    teacher_spec = _resolve_teacher(manifest.teacher, base, label)
    try:
        info = _describe_teacher(teacher_spec)
    except UserError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{label}: {msg if msg.startswith('teacher') else 'teacher: ' + msg}") from None
    if len(info.class_names) != info.num_classes:
        log.warning("teacher %s has %d class names for %d classes; using class_<id>",
                    info.teacher_id, len(info.class_names), info.num_classes)
    classes = _resolve_classes(manifest.classes, info.num_classes, label)
    _check_sizes(manifest, len(classes), label)
    log.debug("%s: teacher %s, %d classes, output %s", label, info.teacher_id, len(classes), output)
    return RunSpec(
        manifest=manifest,
        name=name,
        teacher_spec=teacher_spec,
        teacher=info,
        classes=classes,
        output=output,
        source=source,
    )


def _describe_teacher(teacher_spec: str) -> TeacherInfo:
    from pipeline.teachers.loading import (
        describe_teacher,  # lazy: `import pipeline.run.spec` loads no torch
    )

    return describe_teacher(teacher_spec)


def _engine_defaults() -> dict[str, Any]:
    """``InversionConfig()`` (the engine's own defaults) as an inversion section."""
    return inversion_fields(InversionConfig(), batch_size=1)


def _leaf_paths(d: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the non-mapping values of a nested dict."""
    out: list[str] = []
    for key, value in d.items():
        path = f"{prefix}{key}"
        out += _leaf_paths(value, f"{path}.") if isinstance(value, dict) else [path]
    return out


def _get(d: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        d = d.get(part) if isinstance(d, dict) else None  # type: ignore[assignment]
    return d


def _pop(d: dict[str, Any], path: str) -> None:
    """Remove the value at ``path``, and a mapping it leaves empty (a section added later, all at defaults)."""
    head, _, rest = path.partition(".")
    if rest:
        _pop(d[head], rest)
    if not rest or not d[head]:
        d.pop(head, None)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def _engine_error(manifest: Manifest) -> str | None:
    """The engine's validation of ``inversion`` as one ``inversion.<field>: ...`` line, or None."""
    try:
        inversion_fields(build_config(manifest.inversion), batch_size=1)
    except ValueError as exc:
        return f"inversion.{str(exc).splitlines()[0]}"
    return None


def _is_checkpoint(teacher_spec: str) -> bool:
    return teacher_spec != "toy" and not teacher_spec.startswith("timm:")


def _resolve_teacher(teacher: str, base: Path, label: str) -> str:
    if teacher == "toy":
        return teacher
    if teacher.startswith("timm:"):
        if not teacher[len("timm:"):].strip():
            raise UserError(f"{label}: teacher: 'timm:' needs a model name, e.g. timm:deit_base_patch16_224")
        return teacher
    path = Path(teacher).expanduser()
    path = path if path.is_absolute() else base / path
    path = Path(os.path.normpath(path))
    if not path.is_file():
        raise UserError(f"{label}: teacher: checkpoint file not found: {path} (or use timm:NAME or toy)")
    return str(path)


def _resolve_output(raw: str, base: Path, label: str) -> Path | str:
    """URLs and absolute paths are taken as they are; relative ones must stay inside the manifest's folder."""
    if is_url(raw):
        return raw.rstrip("/")
    p = Path(raw).expanduser()
    if p.is_absolute():
        return Path(os.path.normpath(p))
    lexical = Path(os.path.normpath(base / p))
    if base not in lexical.parents:
        raise UserError(
            f"{label}: output: relative path {raw!r} must name a folder inside the manifest's folder {base} "
            "(use an absolute path to write elsewhere)"
        )
    real = lexical.resolve()
    if base not in real.parents:
        raise UserError(
            f"{label}: output: {raw!r} resolves through a symlink to {real}, outside the manifest's folder {base}"
        )
    return lexical


def _check_sizes(manifest: Manifest, num_classes: int | None, label: str) -> None:
    """Refuse more than :data:`MAX_SHARDS` shards, naming the field to change (arithmetic only).

    ``num_classes=None`` (``classes: all`` before the teacher is described) checks one class's shards.
    """
    ipc, ips = manifest.images_per_class, manifest.images_per_shard
    if num_classes is None:
        per_class = -(-ipc // ips)
        if per_class > MAX_SHARDS:
            raise UserError(f"{label}: images_per_shard: {ipc:,} images per class in shards of {ips:,} make "
                            f"{per_class:,} shards per class; a corpus has at most {MAX_SHARDS:,} (files per "
                            f"folder): use images_per_shard >= {-(-ipc // MAX_SHARDS):,}")
        return
    shards = num_classes * -(-ipc // ips)
    if shards <= MAX_SHARDS:
        return
    per_class = MAX_SHARDS // num_classes  # shards each class may have
    if per_class == 0:
        raise UserError(f"{label}: classes: {num_classes:,} classes make at least {num_classes:,} shards "
                        f"(one class per shard); a corpus has at most {MAX_SHARDS:,} shards (files per folder): "
                        f"choose at most {MAX_SHARDS:,} classes")
    raise UserError(f"{label}: images_per_shard: {num_classes:,} classes x {ipc:,} images in shards of {ips:,} "
                    f"make {shards:,} shards; a corpus has at most {MAX_SHARDS:,} (files per folder): use "
                    f"images_per_shard >= {-(-ipc // per_class):,}")


def _differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(recorded, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(recorded) | set(current), key=str):
            out += _differences(recorded.get(key), current.get(key), f"{prefix}{key}.")
        return out
    if recorded == current:
        return []
    return [f"{prefix.rstrip('.')}: {show(recorded)} -> {show(current)}"]


def _resolve_classes(classes: Any, num_classes: int, label: str) -> tuple[int, ...]:
    if classes == "all":
        return tuple(range(num_classes))
    if isinstance(classes, ClassRange):
        if classes.stop > num_classes:
            raise UserError(
                f"{label}: classes.stop: must be <= the teacher's {num_classes} classes, got {classes.stop}"
            )
        return tuple(range(classes.start, classes.stop))
    bad = [c for c in classes if c >= num_classes]
    if bad:
        raise UserError(
            f"{label}: classes: class id {bad[0]} is outside the teacher's range 0..{num_classes - 1}"
        )
    return tuple(sorted(classes))


class _ManifestLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads ``1e-4`` as a float (YAML 1.2 style)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
