"""The config loader: field rules (`ranged`), YAML with duplicate keys refused, `key=value` overrides, type
checks that name the key, and each config's `problems()` (the resolved dump: tether.config.dump).

Every stage's config (tether.config.train, supervised, rl) and the lab's (tether.lab.config) is built here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from tether.errors import TetherError

PROVENANCE_KEY = "provenance"  # written by `dump_config`, ignored by `load_config`


# ------------------------------------------------------------------------------------------------ value rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field's value must be besides its type, checked at load: a number in an interval, a non-empty
    string, a list (or mapping) of so many items. The number and string parts apply to each item of a list
    field (each value of a mapping) and are skipped for None (an optional field left unset)."""

    text: str = ""
    """The rule as written in the field: "> 0", ">= 1", "[0, 1)" ((: open, [: closed), "non-empty" or ""."""
    length: int | None = None
    """A list field's exact number of items."""
    min_length: int | None = None
    """A list field's least number of items."""

    def __post_init__(self):
        if self.text and self.text != "non-empty" and _interval(self.text) is None:
            raise ValueError(f"unreadable rule {self.text!r}")  # a typo in a config class, at import

    def check(self, key: str, value: Any) -> None:
        """TetherError naming `key` when `value` breaks the rule."""
        if value is None:
            return
        if isinstance(value, dict):  # a mapping field (the lab's shares): its length and each value
            if self.min_length is not None and len(value) < self.min_length:
                items = "entry" if self.min_length == 1 else "entries"
                n = self.min_length
                raise TetherError(f"config key {key} must have at least {n} {items}, got {value!r}")
            for name, item in value.items():
                self.check(f"{key}.{name}", item)
            return
        if isinstance(value, list):
            n = len(value)
            if self.length is not None and n != self.length:
                raise TetherError(f"config key {key} must have {self.length} items, got {n}: {value!r}")
            if self.min_length is not None and n < self.min_length:
                items = "item" if self.min_length == 1 else "items"
                raise TetherError(f"config key {key} must have at least {self.min_length} {items}, got {n}")
            for i, item in enumerate(value):
                self.check(f"{key}[{i}]", item)
            return
        if self.text == "non-empty":
            if not str(value).strip():
                raise TetherError(f"config key {key} must be a non-empty string, got {value!r}")
        elif self.text:
            low, low_open, high, high_open = _interval(self.text)
            if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
                shown = self.text if self.text[0] in "<>" else f"in {self.text}"
                raise TetherError(f"config key {key} must be {shown}, got {value!r}")


def _interval(text: str) -> tuple[float, bool, float, bool] | None:
    """(low, low open, high, high open) of "> 0", ">= 1" or "[0, 1)"; None if unreadable."""
    bound = re.fullmatch(r"(>=?) *(-?[\d.e+-]+)", text)
    if bound:
        return float(bound[2]), bound[1] == ">", math.inf, True
    both = re.fullmatch(r"([\[(]) *(-?[\d.e+-]+) *, *(-?[\d.e+-]+) *([\])])", text)
    if both:
        return float(both[2]), both[1] == "(", float(both[3]), both[4] == ")"
    return None


def ranged(default: Any = dataclasses.MISSING, rule: str = "", *, length: int | None = None,
           min_length: int | None = None) -> Any:
    """A dataclass field whose value must also satisfy `Rule(rule, length, min_length)`; a list or dict
    default (of plain values) is copied for each instance; a list of sections takes dataclasses.field with a
    default_factory and metadata={"rule": Rule(...)}. No default: a required field."""
    meta = {"rule": Rule(rule, length, min_length)}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


SEED = "[0, 4294967296)"  # numpy's seeds are 32-bit unsigned integers

# ------------------------------------------------------------------------------------------------ loading


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, Any] | None = None):
    """Build a `cls` config from a YAML file (optional), `key=value` overrides and `values` (settings
    already parsed, e.g. a command's flags: {dotted key: value}, applied last), validating them together."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    for item in overrides or []:
        key, value = parse_override(cls, item)
        _set_dotted(raw, key, value)
    for key, value in (values or {}).items():
        _set_dotted(raw, key, value)
    return from_dict(cls, raw)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file, without the provenance section `dump_config` adds."""
    path = Path(path)
    try:
        data = load_yaml(path.read_text())
    except OSError as e:
        raise TetherError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TetherError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TetherError(f"{path}: a config must be a mapping of keys to values, got {type(data).__name__}")
    data.pop(PROVENANCE_KEY, None)
    return data


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last one silently,
    so a forgotten earlier line would quietly stop applying)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` entries may be overridden by design
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark, f"duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """yaml.safe_load that refuses duplicate keys (yaml.YAMLError, with the line in its problem_mark)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass


def apply_overrides(cfg, overrides: list[str]):
    """A new config of `cfg`'s class: `cfg` with `key=value` overrides applied and everything checked again as
    at load. A key may step into a list by index or into a mapping by name (`labelers.0.temperature=0.5`,
    `families.task=2`)."""
    raw = to_dict(cfg)
    for item in overrides:
        key, value = parse_override(type(cfg), item)
        _set_dotted(raw, key, value)
    return from_dict(type(cfg), raw)


def parse_override(cls: type, item: str) -> tuple[str, Any]:
    """`"train.lr=3e-4"` → `("train.lr", 0.0003)`, typed by the field the dotted key names."""
    if "=" not in item:
        raise TetherError(f"override {item!r} is not of the form key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    hint = _field_type(cls, key)
    return key, _parse_text(key, text, hint)


def from_dict(cls: type, raw: dict[str, Any], prefix: str = ""):
    """Validate a nested mapping against the dataclass `cls` and build it (missing keys take defaults)."""
    if not isinstance(raw, dict):
        raise TetherError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise _unknown_key(cls, prefix + unknown[0], unknown[0])
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in raw:
            kwargs[name] = _check(key, raw[name], hints[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):
                kwargs[name] = _check(key, {}, hints[name])  # a section whose own keys may be required
            else:
                raise TetherError(f"missing required config key {key}")
    cfg = cls(**kwargs)
    _check_rules(cfg, prefix)  # the sections' own rules were checked as they were built
    return cfg


def is_default(cfg, name: str) -> bool:
    """Whether field `name` of the config dataclass `cfg` holds its declared default (a value the user may
    have left alone; a rule between fields refuses only a changed value of a key that would not act)."""
    f = next(f for f in dataclasses.fields(cfg) if f.name == name)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return getattr(cfg, name) == default


def validate(cfg, prefix: str = "") -> None:
    """TetherError naming the key for the first value of `cfg` (a config dataclass built in Python, e.g. with
    dataclasses.replace) that breaks its field's rule or a rule between fields; `load_config` checks the
    same as it builds."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if dataclasses.is_dataclass(item):
                validate(item, f"{prefix}{f.name}" + (f"[{i}]." if isinstance(value, list) else "."))
    _check_rules(cfg, prefix)


def _check_rules(cfg, prefix: str) -> None:
    """The rules of `cfg`'s own fields (not of its sections), then its `problems()`."""
    for f in dataclasses.fields(cfg):
        if "rule" in f.metadata:
            f.metadata["rule"].check(prefix + f.name, getattr(cfg, f.name))
    for key, reason in cfg.problems() if hasattr(cfg, "problems") else ():
        raise TetherError(f"config key {prefix}{key} {reason}")


def _unknown_key(cls: type, dotted: str, name: str) -> TetherError:
    """The error for a key `name` (written `dotted`) that `cls` has no field for: what to use instead when
    the class says (`instead`, e.g. the RL stages' train.max_steps), else the keys it knows."""
    hint = getattr(cls, "instead", {}).get(name)
    if hint:
        return TetherError(f"config key {dotted} does not apply to this stage: use {hint}")
    known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
    return TetherError(f"unknown config key {dotted} (known: {known})")


def to_dict(cfg) -> dict[str, Any]:
    """The config as plain nested dicts/lists (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


def _field_type(cls: type, dotted: str):
    hint: Any = cls
    for i, part in enumerate(dotted.split(".")):
        origin = typing.get_origin(hint)
        if origin is list and part.isdigit():  # an item of a list field
            (hint,) = typing.get_args(hint)
            continue
        if origin is dict:  # a value of a mapping field
            hint = typing.get_args(hint)[1]
            continue
        if not dataclasses.is_dataclass(hint):
            parent = ".".join(dotted.split(".")[:i])
            raise TetherError(f"unknown config key {dotted} ({parent} has no fields)")
        hints = typing.get_type_hints(hint)
        if part not in {f.name for f in dataclasses.fields(hint)}:
            raise _unknown_key(hint, ".".join(dotted.split(".")[: i + 1]), part)
        hint = hints[part]
    return hint


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        if isinstance(node, list):  # a list present in `raw` (apply_overrides): step in by index
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(parts[:i])
                raise TetherError(f"config key {dotted}: {where} has no item {part} (it has {len(node)})")
            part = int(part)
        elif i < len(parts) - 1 and not isinstance(node.get(part), dict | list):
            node[part] = {}
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def _parse_text(key: str, text: str, hint) -> Any:
    """Turn an override's text into a value for a field of type `hint` (checked later by `_check`)."""
    text = text.strip()
    if hint is str:
        return text
    if _optional_inner(hint) is str:
        return None if text.lower() in ("null", "none", "~") else text
    try:
        value = load_yaml(text) if text else None
    except yaml.YAMLError:
        raise TetherError(f"config key {key}: cannot parse {text!r}") from None
    return value


def _optional_inner(hint):
    """X for `X | None`, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check(key: str, value: Any, hint) -> Any:
    """`value` converted to `hint`, or TetherError naming `key`."""
    bad = TetherError(f"config key {key}: expected {_type_name(hint)}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, prefix=key + ".")
    inner = _optional_inner(hint)
    if inner is not None:
        return None if value is None else _check(key, value, inner)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # scalars of several types: the first that takes it
        for arm in typing.get_args(hint):
            with contextlib.suppress(TetherError):
                return _check(key, value, arm)
        raise bad
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(a) for a in typing.get_args(hint))
            raise TetherError(f"config key {key}: {value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise bad
        (item,) = typing.get_args(hint)
        return [_check(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        item = typing.get_args(hint)[1]
        return {k: _check(f"{key}.{k}", v, item) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad
        try:
            number = float(value)  # YAML reads 1e-4 (no dot) as a string
        except (ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(number):
            raise TetherError(f"config key {key} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TetherError(f"config key {key}: unsupported field type {hint!r}")  # a bug in a config class
