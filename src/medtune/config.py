"""Recipes: YAML, then dotted overrides (`train.learning_rate=1e-5`), into a stage's config dataclass.

Every key must exist in the dataclass: an unknown one is an error that names it and suggests the closest
valid key. Values are checked against the field's type (int, float, bool, str, list, Optional, Literal).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from medtune.errors import ConfigError


def _closest(name: str, options) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"did you mean '{match[0]}'?" if match else f"valid keys: {', '.join(sorted(options))}"


def _coerce(value: Any, tp, where: str):
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{value!r} is not allowed", where=where, hint=f"choose one of: {choices}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):  # `lora.target_modules=q_proj,v_proj` on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", where=where)
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", where=where)
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a section of keys, got {value!r}", where=where)
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected true or false, got {value!r}", where=where)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"expected an integer, got {value!r}", where=where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"expected a number, got {value!r}", where=where)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"expected a string, got {value!r}", where=where)
    return value


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where != "config" else key
        if key not in fields:
            raise ConfigError(f"unknown key '{path}'", hint=_closest(key, fields))
        kwargs[key] = _coerce(value, hints[key], path)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key '{missing[0]}'", where=where)
    return cls(**kwargs)


def parse_overrides(overrides: list[str]) -> dict:
    """`["a.b=1", "c=x"]` -> `{"a": {"b": 1}, "c": "x"}`; values are read as YAML scalars or lists."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not KEY=VALUE", hint="write e.g. train.learning_rate=1e-5")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{part}'")
        node[parts[-1]] = value
    return out


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path) -> dict:
    from medtune.data import resolve_path

    path = Path(resolve_path(str(path)))
    if not path.is_file():
        raise ConfigError("recipe file not found", where=str(path), hint="check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", where=where) from None
    if not isinstance(data, dict):
        raise ConfigError("a recipe must be a mapping of keys", where=str(path))
    return data


def load_config(cls, recipe=None, overrides: list[str] | None = None):
    """Read `recipe` (YAML path or None), apply dotted `overrides`, and build `cls`.

    A recipe may hold a top-level `stage:` key naming the stage it is for; it is checked, not stored.
    """
    data = read_yaml(recipe) if recipe else {}
    data = merge(data, parse_overrides(overrides or []))
    stage = data.pop("stage", None)
    expected = getattr(cls, "stage", None)
    if stage is not None and expected is not None and stage != expected:
        raise ConfigError(f"this recipe is for stage '{stage}', not '{expected}'", where=str(recipe))
    where = str(recipe) if recipe else "config"
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if recipe and exc.where is None:
            exc.where = where
            exc.args = (exc.format(),)
        raise


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
