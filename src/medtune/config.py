"""Recipes: YAML, then dotted overrides (`train.learning_rate=1e-5`), into a stage's config dataclass.

Every key must exist in the dataclass: an unknown one is an error that names it and suggests the closest
valid key. Values are checked against the field's type (int, float, bool, str, list, Optional, Literal),
then against the field's range where its metadata holds one:

    batch_size: int = field(default=4, metadata=at_least(1))

An error names where the value came from: `recipe.yaml:LINE: field 'train.batch_size'`, or the override
`train.batch_size=0` given on the command line.

Command-line options are checked the same way: `int_option`/`float_option` are argparse `type=` checkers with a
range, and `CommandParser` reports a bad option on one line with exit code 2, as a bad recipe key is.

Option sets that are not recipes (`medtune eval`'s settings, a pipeline's eval step, a merge sweep) are built
with `from_dict(cls, data, source=...)`: the same key, type and range checks, the error naming its source; and
`field_option(cls, name)` gives a command-line option the range its field declares, so it is declared once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from medtune import resolve_path
from medtune.errors import ConfigError


def _closest(name: str, options) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"did you mean '{match[0]}'?" if match else f"valid keys: {', '.join(sorted(options))}"


# --------------------------------------------------------------------------- value checks (field metadata)


def check(test, rule: str) -> dict:
    """Field metadata: the value must pass `test`; `rule` completes "must be ..." in the error."""
    return {"check": (test, rule)}


def at_least(low) -> dict:
    return {**check(lambda v: v >= low, f"at least {low}"), "bounds": (low, None, False)}


def above(low) -> dict:
    return {**check(lambda v: v > low, f"more than {low}"), "bounds": (low, None, True)}


def between(low, high) -> dict:
    return {**check(lambda v: low <= v <= high, f"between {low} and {high}"), "bounds": (low, high, False)}


def one_of(*choices) -> dict:
    return check(lambda v: v in choices, "one of: " + ", ".join(map(str, choices)))


# --------------------------------------------------------------------------- command-line options

INT_LIMIT = 2**31 - 1  # a larger count overflows tokenizers' and torch's 32-bit indices; no option needs one
SEED_LIMIT = 2**32 - 1  # numpy's seeds stop here


def _bounds(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'more than' if low_open else 'at least'} {low:g}")
    if high is not None:
        parts.append(f"{'below' if high_open else 'at most'} {high:g}")
    return " and ".join(parts)


def int_option(low: int, high: int = INT_LIMIT):
    """An argparse `type=` for an integer option in [low, high]; anything else is refused on one line."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low} (got {value})")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high} (got {value})")
        return value

    parse.bounds = (low, high)  # read by the test that every numeric option is checked
    return parse


def float_option(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False):
    """An argparse `type=` for a finite number in the given range (open ends with `low_open`/`high_open`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not math.isfinite(value)
        bad = bad or (low is not None and (value <= low if low_open else value < low))
        bad = bad or (high is not None and (value >= high if high_open else value > high))
        if bad:
            rule = _bounds(low, high, low_open, high_open)
            raise argparse.ArgumentTypeError(f"must be a finite number{' ' + rule if rule else ''} (got {text})")
        return value

    parse.bounds = (low, high)
    return parse


def field_option(cls, name: str):
    """The argparse `type=` of the option that sets field `name` of dataclass `cls`, from the field's own type and
    range (`metadata=at_least(0)`, `above(0)`, `between(0, 9)`): a command-line option and the same key in a
    pipeline step or a sweep are checked by one declaration. An integer without an upper bound stops at
    INT_LIMIT, as every integer option does."""
    spec = {f.name: f for f in dataclasses.fields(cls)}[name]
    tp = typing.get_type_hints(cls)[name]
    low, high, low_open = spec.metadata["bounds"]  # a numeric option must declare its range
    if tp is int:
        return int_option(low, INT_LIMIT if high is None else high)
    return float_option(low, high, low_open=low_open)


def text_option(text: str) -> str:
    """An argparse `type=` for text that must not be blank (a message: the data contract forbids empty turns)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


text_option.bounds = None


def numbers_option(low: float, high: float | None = None):
    """An argparse `type=` for comma-separated finite numbers in [low, high] (`--sweep 0,0.5,1`)."""

    def parse(text: str) -> list[float]:
        try:
            values = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
        for v in values:
            if not math.isfinite(v) or v < low or (high is not None and v > high):
                rule = f"between {low:g} and {high:g}" if high is not None else f"finite and at least {low:g}"
                raise argparse.ArgumentTypeError(f"must hold numbers {rule} (got {text})")
        return values

    parse.bounds = (low, high)
    return parse


def size_option(text: str) -> int:
    """An argparse `type=` for a size in bytes: `2GB`, `500MB`, `64KB` or a number (at least 1)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GB, 500MB)")
    unit = (match.group(2) or "B").upper().rstrip("B").rstrip("I")
    size = int(float(match.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit])
    if size < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte (got {text!r})")
    return size


size_option.bounds = (1, None)


class CommandParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (`medtune: error: --shots must be at least 0 (got -1) ...`) and
    exit code 2, like every other user error; subcommands inherit it."""

    def error(self, message: str):
        message = re.sub(r"^argument (?:-[\w-]+/)*(-[\w-]+): ", r"\1 ", message)  # -o/--output: --output
        self.exit(2, f"medtune: error: {message} (see `{self.prog} --help`)\n")


def _error(key: str, message: str, hint: str | None = None, *, key_in_message: bool = False) -> ConfigError:
    """A ConfigError about the value at dotted `key`; load_config later says which file line or override set it."""
    exc = ConfigError(message, where=None if key_in_message else key, hint=hint)
    exc.key, exc.key_in_message = key, key_in_message
    return exc


def _describe(tp) -> str:
    """What a type accepts, in words, for a union's error message."""
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, "a list")


def _coerce(value: Any, tp, where: str):
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for arg in options:
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        if len(options) == 1:  # Optional[X]: X's own message
            return _coerce(value, options[0], where)
        accepted = [_describe(a) for a in options]
        raise _error(where, f"expected {', '.join(accepted[:-1])} or {accepted[-1]}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise _error(where, f"{value!r} is not allowed", hint=f"choose one of: {choices}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):  # `lora.target_modules=q_proj,v_proj` on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _error(where, f"expected a list, got {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _error(where, f"expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if value is None:  # `train:` with every key under it commented out
            value = {}
        if not isinstance(value, dict):
            raise _error(where, f"expected a section of keys, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _error(where, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _error(where, f"expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
        raise _error(where, f"expected a finite number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _error(where, f"expected a string, got {value!r}")
    return value


def from_dict(cls, data: dict, where: str = "config", *, source: str | None = None):
    """Build dataclass `cls` from a nested dict, as a recipe is built: an unknown key (with the closest valid
    one), a wrong type or a value outside its field's range (`metadata=at_least(1)`) raises ConfigError.

    `source` names where the dict came from, for options that are not a recipe file: a pipeline step
    (`pipe.yaml: step 'exam'`) or a sweep. The error then reads `SOURCE: field 'shots': got -1; it must be
    at least 0`.
    """
    if source is not None:
        try:
            return from_dict(cls, data, where)
        except ConfigError as exc:
            key = getattr(exc, "key", None)
            exc.where = source if key is None or exc.key_in_message else f"{source}: field '{key}'"
            exc.args = (exc.format(),)
            raise
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of keys, got {data!r}", where=None if where == "config" else where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        key = str(key)  # YAML allows `1: x` or `null: x`
        path = f"{where}.{key}" if where != "config" else key
        if key not in fields:
            raise _error(path, f"unknown key '{path}'", _closest(key, fields), key_in_message=True)
        factory = fields[key].default_factory
        if isinstance(value, dict) and factory is not dataclasses.MISSING and dataclasses.is_dataclass(hints[key]):
            # a section given in part keeps the stage's own defaults for the rest (dpo's train.learning_rate
            # is 5e-5, not TrainConfig's 2e-4): start from the default instance, then apply what was given
            value = merge(dataclasses.asdict(factory()), value)
        kwargs[key] = _coerce(value, hints[key], path)
        rule = fields[key].metadata.get("check")
        if rule and not rule[0](kwargs[key]):
            raise _error(path, f"got {value!r}; it must be {rule[1]}")
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


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (plain PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key_node.value}' is given twice (first on line {seen[key_node.value]}); keep one",
                        key_node.start_mark,
                    )
                seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _key_lines(path) -> dict:
    """{"train.batch_size": line, ...}: where each key of a recipe is written (only used to report an error)."""
    lines: dict = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key = f"{prefix}{key_node.value}"
                    lines.setdefault(key, key_node.start_mark.line + 1)
                    walk(value_node, key + ".")

    try:
        walk(yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader), "")
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    return lines


def read_yaml(path) -> dict:
    path = Path(resolve_path(str(path)))
    if path.is_dir():
        raise ConfigError("is a directory, not a recipe file", where=str(path), hint="pass the .yaml file itself")
    if not path.is_file():
        raise ConfigError("recipe file not found", where=str(path), hint="check the path")
    text = ""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_RecipeLoader) or {}
    except UnicodeDecodeError as exc:
        hint = "save the recipe as UTF-8"
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=str(path), hint=hint) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the recipe: {exc.strerror}", where=str(path)) from None
    except yaml.reader.ReaderError as exc:  # a control character YAML does not allow (NUL, ...)
        line = text[: exc.position].count("\n") + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise ConfigError(f"invalid YAML: the character {char!r} is not allowed in YAML", where=f"{path}:{line}",
                          hint="remove it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"invalid YAML: {problem}", where=where) from None
    if not isinstance(data, dict):
        got = type(data).__name__
        raise ConfigError(f"a recipe must be a mapping of keys, not a {got}", where=str(path), hint="write `key: value` lines")
    return data


def load_config(cls, recipe=None, overrides: list[str] | None = None, *, origin=None):
    """Read `recipe` (YAML path or None), apply dotted `overrides`, and build `cls`.

    A recipe may hold a top-level `stage:` key naming the stage it is for; it is checked, not stored.
    `origin(override)` names where an override came from in an error (default: `override 'KEY=VALUE'`, as typed
    on the command line; a pipeline names its file, step and `set` key).
    """
    data = read_yaml(recipe) if recipe else {}
    data = merge(data, parse_overrides(overrides or []))
    stage = data.pop("stage", None)
    expected = getattr(cls, "stage", None)
    if stage is not None and expected is not None and stage != expected:
        raise ConfigError(f"this recipe is for stage '{stage}', not '{expected}'", where=str(recipe))
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        _locate(exc, recipe, overrides or [], origin)
        raise


def _override_for(key: str, overrides: list[str]):
    """The command-line override that set dotted `key`, a section holding it, or a key under it; else None."""
    for item in reversed(overrides):
        name = item.split("=", 1)[0].strip()
        if name == key or key.startswith(name + ".") or name.startswith(key + "."):
            return item, name
    return None, None


def _locate(exc: ConfigError, recipe, overrides: list[str], origin=None) -> None:
    """Point the error at what set the bad value: the override on the command line, or the recipe's line."""
    key = getattr(exc, "key", None)
    if key is None:
        where = exc.where or (str(recipe) if recipe else None)
    else:
        top = re.sub(r"\[\d+\]$", "", key)  # lora.target_modules[1] -> lora.target_modules
        item, name = _override_for(top, overrides)
        if item is not None:
            where = origin(item) if origin else f"override '{item}'"
            exc.key_in_message |= name == key  # `override 'train.seed=x'` already names the field
        elif recipe:
            line = _key_lines(resolve_path(str(recipe))).get(top)
            where = f"{recipe}:{line}" if line else str(recipe)
        else:
            where = None
        if not exc.key_in_message:
            where = f"{where}: field '{key}'" if where else key
    exc.where = where
    exc.args = (exc.format(),)
