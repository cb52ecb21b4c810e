"""Every key a stage's config accepts, with its type, default and the one-line docstring under its field:
what `tether config show STAGE` prints and `tether STAGE --help` lists.

    for key in describe(PPOConfig): print(key.name, key.default, key.doc)
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from tether.config.rl import GRPOConfig, PPOConfig, RLOOConfig
from tether.config.supervised import DPOConfig, RMConfig, SFTConfig

STAGES = {"sft": SFTConfig, "rm": RMConfig, "dpo": DPOConfig, "ppo": PPOConfig, "grpo": GRPOConfig,
          "rloo": RLOOConfig}
"""The training stages' config classes by command name."""


@dataclass(frozen=True)
class Key:
    """One config key, as `describe` lists it."""

    name: str
    """Dotted, as an override writes it: train.lr."""
    type: str
    """The field's type annotation."""
    default: Any
    """The default of a fresh config (a required key: dataclasses.MISSING)."""
    doc: str
    """The docstring under the field, whitespace collapsed."""


@cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of a config dataclass and its bases: the string statement after each field."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, nxt in zip(body, [*body[1:], None], strict=True):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                    docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def describe(cls: type, prefix: str = "", instance: Any = None) -> list[Key]:
    """Every key of the config dataclass `cls` in declaration order, nested sections flattened (train.lr);
    defaults are a fresh config's, so a section's stage-specific defaults show (SFT's train.lr)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    keys: list[Key] = []
    for f in dataclasses.fields(cls):
        default = _default(f) if instance is None else getattr(instance, f.name)
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            inner = default if dataclasses.is_dataclass(default) else None
            keys.extend(describe(hint, f"{prefix}{f.name}.", inner))
            continue
        keys.append(Key(prefix + f.name, _type_text(hint), default, docs.get(f.name, "")))
    return keys


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _type_text(hint) -> str:
    text = str(hint).replace("typing.", "")
    return hint.__name__ if isinstance(hint, type) else text


def show(cls: type) -> str:
    """The text `tether config show` prints: one block per key, `name = default  (type)` then its doc."""
    lines = []
    for key in describe(cls):
        default = "(required)" if key.default is dataclasses.MISSING else repr(key.default)
        lines.append(f"{key.name} = {default}  ({key.type})")
        lines.extend(textwrap.wrap(key.doc, 106, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)
