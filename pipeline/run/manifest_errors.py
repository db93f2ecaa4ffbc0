"""Manifest problems as one-line messages: pydantic's validation errors and YAML's parse errors."""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


def show(v: Any, limit: int = 60) -> str:
    """``repr(v)``, cut to ``limit`` characters."""
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _type_name(v: Any) -> str:
    """``integer 5``, ``string 'x'``, ``null``: a value with its YAML type, for messages."""
    if v is None:
        return "null"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    return f"{names.get(type(v), type(v).__name__)} {show(v)}"


def _fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found at ``loc`` (for did-you-mean suggestions)."""
    model: Any = root
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


MAX_ERRORS_SHOWN = 3  # further problems are counted on the same line


def format_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """Every pydantic error of validating ``root`` on one line, most telling first: unknown fields (with
    did-you-mean from ``root``'s fields) before the rest, and a required field left out by a typo reported
    only as the typo."""
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    explained = set()  # (parent, field) a typo's did-you-mean names: its "missing" error is that typo
    for e in unknown:
        parent = tuple(e["loc"][:-1])
        hint = difflib.get_close_matches(str(e["loc"][-1]), _fields_at(root, parent), n=1)
        if hint:
            explained.add((parent, hint[0]))
    rest = [e for e in errors if e["type"] != "extra_forbidden"
            and not (e["type"] == "missing" and (tuple(e["loc"][:-1]), str(e["loc"][-1])) in explained)]
    messages = list(dict.fromkeys(_format_error(e, root) for e in unknown + rest))
    shown = "; ".join(messages[:MAX_ERRORS_SHOWN])
    more = len(messages) - MAX_ERRORS_SHOWN
    return shown + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")


def _format_error(err: Any, root: type[BaseModel]) -> str:
    """One pydantic error as ``field.path: message``."""
    loc = tuple(err["loc"])
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    where = ".".join(str(p) for p in loc)
    if kind == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        hint = difflib.get_close_matches(key, _fields_at(root, parent), n=1)
        msg = f"unknown field '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
        return f"{'.'.join(map(str, parent))}: {msg}" if parent else msg
    if kind == "missing":
        return f"{where}: required field is missing"
    if kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
        return f"{where}: {msg}" if where else msg
    if kind in ("int_type", "float_type", "bool_type", "string_type", "list_type", "model_type", "dict_type"):
        expected = {
            "int_type": "an integer",
            "float_type": "a number",
            "bool_type": "true or false",
            "string_type": "a string",
            "list_type": "a list",
            "model_type": "a mapping of fields",
            "dict_type": "a mapping of fields",
        }[kind]
        return f"{where}: expected {expected}, got {_type_name(value)}"
    if kind == "greater_than":
        return f"{where}: must be > {ctx['gt']}, got {show(value)}"
    if kind == "greater_than_equal":
        return f"{where}: must be >= {ctx['ge']}, got {show(value)}"
    if kind == "less_than":
        return f"{where}: must be < {ctx['lt']}, got {show(value)}"
    if kind == "literal_error":
        return f"{where}: expected {ctx.get('expected')}, got {show(value)}"
    if kind in ("too_short", "too_long"):
        n = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"{where}: expected {n} items, got {ctx.get('actual_length')}"
    if kind == "finite_number":
        return f"{where}: must be a finite number, got {show(value)}"
    if kind == "invalid_key":
        return f"{where}: field names must be strings, got {_type_name(value)}"
    if kind == "string_too_short":
        return f"{where}: must not be empty"
    return f"{where}: {err['msg']}, got {show(value)}"


def yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())
