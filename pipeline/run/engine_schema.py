"""The manifest's ``inversion`` section, derived from :mod:`smi_core.config`: the one schema of the engine settings.

Every field of :class:`~smi_core.config.InversionConfig` and of its parts is a manifest field of the same
name, its type read from the dataclass (``dataclasses.fields`` and the type hints), so a field added to the
engine config (with a default) needs nothing here: a manifest may write it, its type is checked, the
recommended recipe (:func:`smi_core.recipe.recommended_config`) fills it when left out, the engine's own
check reports a bad value, and ``manifest.json`` and the spec hash record it. Types: ``bool``, ``int``,
``float`` and ``str`` strictly (an integer is a valid float; a boolean is neither); a ``Literal`` its values;
``tuple[T, ...]`` a list; ``tuple[T, T]`` a list of that length; ``X | None`` also ``null``; a dataclass a
nested section.

One mapping is explicit, :data:`SELECTION_NAMES`: the selection's fields sit at the top of the section
(``stopped_patches: prior``, not ``selection: {stopped: prior}``), two of them under the names manifests and
spec hashes have always used. Four fields are the pipeline's own: ``method`` and ``iterations`` choose the
recipe (``method`` is ``selection.kind``, dense or smi), ``batch_size`` and ``pack_batches`` split a shard
into engine calls.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from smi_core.config import InversionConfig, SelectionConfig
from smi_core.recipe import Method, equal_stage_ratios, finish_start, recommended_config

PositiveInt = Annotated[StrictInt, Field(gt=0)]
Number = Annotated[float, Strict()]  # ints are accepted and stored as floats; strings and bools are not

# selection field -> its manifest name, at the top of the inversion section (the names hashes hold)
SELECTION_NAMES = {f.name: {"kind": "method", "stopped": "stopped_patches"}.get(f.name, f.name)
                   for f in dataclasses.fields(SelectionConfig)}
# the inversion fields a dense run ignores (it stops no patch), left out of its spec hash
SMI_ONLY_FIELDS = tuple(name for field, name in SELECTION_NAMES.items() if field != "kind")
_TOP_FIELDS = tuple(f.name for f in dataclasses.fields(InversionConfig) if f.name != "selection")


class ManifestSection(BaseModel):
    """A mapping of a manifest: unknown fields, infinities and NaN refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RecipeSection(ManifestSection):
    """A section whose left-out fields take the recommended recipe's values (:mod:`smi_core.recipe`).

    ``None`` stands for "left out"; writing ``null`` is refused except where the engine takes ``None``
    (``_NULLABLE``, e.g. ``augment.zoom``). What the manifest set is ``model_fields_set``.
    """

    _NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _no_null(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None and info.field_name not in cls._NULLABLE:
            raise ValueError("must not be null (leave the field out to get the recommended value)")
        return v


def _manifest_type(hint: Any, where: str) -> tuple[Any, bool]:
    """The pydantic type a manifest writes for an engine type hint, and whether it takes ``null``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _manifest_type(rest[0], where)[0], True
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return list[_manifest_type(args[0], where)[0]], False  # type: ignore[misc]
    if origin is tuple and args and len(set(args)) == 1:
        return Annotated[list[_manifest_type(args[0], where)[0]],  # type: ignore[misc]
                         Field(min_length=len(args), max_length=len(args))], False
    if origin is Literal:
        return hint, False
    if dataclasses.is_dataclass(hint):
        return _section(hint), False
    strict = {bool: StrictBool, int: StrictInt, float: Number, str: StrictStr}
    if hint in strict:
        return strict[hint], False
    raise TypeError(f"{where}: no manifest type for {hint!r}; teach pipeline/run/engine_schema.py this type")


def _fields(cls: type, names: dict[str, str] | None = None) -> dict[str, tuple[Any, Any, bool]]:
    """``cls``'s fields as manifest fields: name -> (type, default, whether it takes null); a default of ``None``
    stands for "left out". InversionConfig's selection is inlined under :data:`SELECTION_NAMES`."""
    hints = get_type_hints(cls)
    out: dict[str, tuple[Any, Any, bool]] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if cls is InversionConfig and f.name == "selection":
            out |= _fields(SelectionConfig, SELECTION_NAMES)
            continue
        kind, takes_null = _manifest_type(hints[f.name], f"{cls.__name__}.{f.name}")
        nested = isinstance(kind, type) and issubclass(kind, BaseModel)
        out[(names or {}).get(f.name, f.name)] = (
            (kind, Field(default_factory=kind), False) if nested else (kind | None, None, takes_null))
    return out


def _model(name: str, doc: str, fields: dict[str, tuple[Any, Any, bool]]) -> type[RecipeSection]:
    namespace = {"__annotations__": {k: v[0] for k, v in fields.items()}, "__doc__": doc, "__module__": __name__,
                 "__qualname__": name, "_NULLABLE": frozenset(k for k, v in fields.items() if v[2]),
                 **{k: v[1] for k, v in fields.items()}}
    return type(RecipeSection)(name, (RecipeSection,), namespace)  # type: ignore[no-any-return]


def _section(cls: type) -> type[RecipeSection]:
    """The manifest section of the engine dataclass ``cls`` (``LossWeights`` -> ``LossWeightsSection``)."""
    return _model(f"{cls.__name__}Section", f"{cls.__name__} as a manifest section (left out: the recipe's).",
                  _fields(cls))


def _inversion_section() -> type[RecipeSection]:
    own: dict[str, tuple[Any, Any, bool]] = {  # the pipeline's fields (pack_batches goes last)
        "method": (Method, "smi", False), "iterations": (PositiveInt, InversionConfig().iterations, False),
        "batch_size": (PositiveInt | None, None, True), "pack_batches": (PositiveInt, 1, False)}
    engine = _fields(InversionConfig)
    fields = {**{k: own[k] for k in ("method", "iterations", "batch_size")},
              **{k: v for k, v in engine.items() if k not in own}, "pack_batches": own["pack_batches"]}
    doc = ("How each image is inverted: :class:`smi_core.config.InversionConfig`'s fields (the selection's at the "
           "top), each left out taking :func:`smi_core.recipe.recommended_config`'s value for the method and "
           "iteration count.")
    return _model("InversionSpec", doc, fields)


InversionSpec = _inversion_section()


# --- manifest -> engine ------------------------------------------------------------------------------------


def build_config(inv: BaseModel) -> InversionConfig:
    """The engine's config: the fields ``inv`` (an :data:`InversionSpec`) sets over the recommended recipe for
    its method and iteration count; raises the engine's ``ValueError`` (``field: message``) when invalid.

    Three recipe rules: stop iterations written without ratios get the recommended (uniform) ratio at each
    stop, and without ``rejoin`` the recommended dense finish if it comes after them (else none); and the
    recommended pyramid goes with stopped patches left to the prior, so a manifest that pins stopped patches
    (``stopped_patches: frozen``, the paper's) for SMI and leaves ``pyramid`` out gets pixels only, instead
    of an error about a field it never wrote."""
    written, every = inv.model_dump(exclude_unset=True), inv.model_dump()
    method, iterations = every["method"], every["iterations"]
    rec = recommended_config(method, iterations)
    changes: dict[str, Any] = {name: written[name] for name in _TOP_FIELDS if name in written}
    selection = {field: written[name] for field, name in SELECTION_NAMES.items() if name in written}
    changes |= {"iterations": iterations, "selection": {**selection, "kind": method}}
    schedule = selection.get("schedule", {})
    ratios = rec.selection.schedule.ratios
    if "iterations" in schedule and "ratios" not in schedule and method == "rebirth":  # equal stages
        schedule["ratios"] = list(equal_stage_ratios(len(schedule["iterations"])))
    elif "iterations" in schedule and "ratios" not in schedule and len(set(ratios)) == 1:
        schedule["ratios"] = ratios[:1] * len(schedule["iterations"])
    if "iterations" in schedule and "rejoin" not in selection and method == "smi":
        changes["selection"]["rejoin"] = finish_start(iterations, schedule["iterations"])
    if "pyramid" not in changes and selection.get("stopped", rec.selection.stopped) == "frozen" and method != "dense":
        changes["pyramid"] = ()  # the paper's pinned stops: coarse levels would move them, so pixels only
    return _replace(rec, changes)  # type: ignore[no-any-return]


def _replace(cfg: Any, changes: dict[str, Any]) -> Any:
    """``cfg`` with ``changes`` (nested dicts for nested dataclasses, lists for tuples), in field order, so
    each part is checked by its own dataclass before the whole."""
    values = {}
    for f in dataclasses.fields(cfg):
        if f.name in changes:
            value = changes[f.name]
            values[f.name] = _replace(getattr(cfg, f.name), value) if isinstance(value, dict) else _engine(value)
    return dataclasses.replace(cfg, **values)


def _engine(value: Any) -> Any:
    return tuple(_engine(v) for v in value) if isinstance(value, list) else value


# --- engine -> manifest ------------------------------------------------------------------------------------


def inversion_fields(cfg: InversionConfig, *, batch_size: int, pack_batches: int = 1) -> dict[str, Any]:
    """An engine config as a manifest's ``inversion`` section (every field, JSON types): what
    ``manifest.json`` records and the spec hash reads. Numbers go through :data:`InversionSpec`, so a value
    reads the same whether a manifest wrote it or the recommended recipe gave it (``1`` -> ``1.0``)."""
    raw = {name: _plain(getattr(cfg, name)) for name in _TOP_FIELDS}
    raw |= {name: _plain(getattr(cfg.selection, field)) for field, name in SELECTION_NAMES.items()}
    raw |= {"batch_size": batch_size, "pack_batches": pack_batches}
    return InversionSpec.model_validate(raw).model_dump(mode="json")


def _plain(value: Any) -> Any:
    """A config value in the manifest's terms: dataclasses as mappings, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return [_plain(v) for v in value] if isinstance(value, tuple) else value
