"""User functions named 'module:function' (reward functions, gold rewards): telling such a spec from a path,
importing one with a one-line error, and which of the prompt file's columns a scoring function takes.
Importing runs the module's code with the user's rights (Python's import system: sys.path, which under
`python -m` starts with the working directory): that is the feature.

Below tether.rewards (which scores with them) so that the config can refuse, at load, a spec that does not
import.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

from tether.errors import TetherError


def is_function_spec(spec: str) -> bool:
    """Whether a spec names a Python function ('module:function', not a path that exists)."""
    return ":" in spec and not Path(spec).exists()


def import_function(spec: str, what: str = "reward") -> tuple[Callable, str | None]:
    """(the function `spec` names, the file its module was imported from: None for a built-in module).
    TetherError of one line, starting `what` and the spec, when the module does not import or has no such
    function."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise TetherError(f"{what} {spec!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TetherError(f"{what} {spec!r}: cannot import module {module_name!r}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise TetherError(f"{what} {spec!r}: module {module_name!r} has no function {attr!r}")
    return fn, getattr(module, "__file__", None)


NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)  # parameters a column fills


def column_parameters(fn: Callable) -> tuple[set[str] | None, list[str]]:
    """(the columns a scoring function fn(prompts, responses, ...) takes after its first two parameters: None
    for all of them when it has **kwargs, else the names of its parameters; those of them without a
    default, which it requires)."""
    params = list(inspect.signature(fn).parameters.values())[2:]
    named = [p for p in params if p.kind in NAMED]
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return (None if takes_all else {p.name for p in named}), [p.name for p in named if p.default is p.empty]


def columns_taken(fn: Callable, columns: dict[str, list]) -> dict[str, list]:
    """The entries of `columns` that fn takes (`column_parameters`): all, those it names, or none."""
    taken, _ = column_parameters(fn)
    return dict(columns) if taken is None else {k: v for k, v in columns.items() if k in taken}
