"""The import structure of tether/ (../shared/design.md, "Layers"), read from the source with `ast`.

Every `import` and `from ... import` of every module counts, at top level and inside functions alike: an
import hidden in a function still ties the modules together. `from tether.x import name` is an edge to
tether.x.name when that is a module, else to tether.x (a package's __init__ when x is a package).

Checked: (a) no import cycles between tether modules; (b) tether.theory and tether.losses import nothing
from tether outside tether.losses; (c) each module's layer (LAYERS) imports only its own layer or lower
ones; trainers import instruments only for periodic evaluation (EVALUATION); no stage trainer imports
another. Where the table departs from design.md's sketch, a comment says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tether

ROOT = Path(tether.__file__).parent

# Highest first. A module belongs to the first entry that is it or a package above it.
LAYERS = [
    ("face", ("tether.cli", "tether.commands", "tether.api")),
    ("orchestration", ("tether.pipeline", "tether.sweep", "tether.verify")),
    # reward_pairs labels a policy's samples (drawn by tether.cai.label's sample_pairs) with a reward
    # tether.inputs writes a Python caller's in-memory records and models into a training run's directory
    # (comparing them with checkpoints' manifests)
    ("training", ("tether.trainers", "tether.cai", "tether.reward_pairs", "tether.inputs")),
    # design.md puts rewards with the plumbing, but one reward source is the lab's gold reward (rewards
    # imports tether.lab), so the reward sources sit with the lab and the instruments that read them.
    # tether.verifiable and tether.sentiment: reward functions (exact answers, VADER) that the RL stages and
    # evaluations import by spec.
    ("measurement", ("tether.instruments", "tether.lab", "tether.rewards", "tether.verifiable",
                     "tether.sentiment")),
    ("plumbing", ("tether.rollout", "tether.rollout_vllm", "tether.hh_rlhf")),
    # packing (padding-free forward passes) serves reward_model as much as rollout: it sits here.
    ("models", ("tether.models", "tether.models_pull", "tether.model_files", "tether.reward_model",
                "tether.lora", "tether.lora_merge", "tether.reference", "tether.config",
                "tether.activations", "tether.precision", "tether.packing", "tether.model_card")),
    # design.md lists data with the plumbing; it sits below the models because reward_model and
    # models_pull tokenise and pad with it (it imports only tether.errors).
    ("data", ("tether.data", "tether.data_sources", "tether.preferences")),
    # tether.functions imports user code by 'module:function': below the config, which refuses a bad one.
    ("base", ("tether.errors", "tether.files", "tether.rundir", "tether.quiet", "tether.functions",
              "tether")),
    ("math", ("tether.losses", "tether.theory")),
]

# The trainers' periodic evaluation: the only instruments a trainer module may import.
EVALUATION = {
    ("tether.trainers.rl", "tether.instruments.evaluate"),  # RL: judged evaluation against the base
    ("tether.trainers.dpo", "tether.instruments.kl"),  # DPO: KL from the reference on held-out prompts
    ("tether.trainers.rm", "tether.instruments.rm_accuracy"),  # RM: test accuracy and calibration
}

# The training stages; the other modules of tether/trainers/ are the pieces they share.
STAGES = {f"tether.trainers.{name}" for name in ("sft", "rm", "dpo", "ppo", "grpo", "rloo")}

# Violations that exist today and are being removed (none left after issue 16).
KNOWN: set[tuple[str, str]] = set()


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """{dotted name: file} of every module of the package at `root` (a package is named by its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The tether modules that module `name` (file `path`) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def known(dotted: str) -> str:
        while dotted not in modules:  # tether.x.function -> tether.x
            dotted = dotted.rpartition(".")[0]
        return dotted

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {known(a.name) for a in node.names if a.name.split(".")[0] == "tether"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y inside package p -> p.x
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "tether":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else known(base))
    found.discard(name)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def layer_of(name: str) -> int:
    """Rank of `name`'s layer, 0 = the highest."""
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or (prefix != "tether" and name.startswith(prefix + ".")):
                return rank
    raise KeyError(name)


def violations(graph: dict[str, set[str]]) -> set[tuple[str, str, str]]:
    """(importer, imported, rule) for every import that breaks the layering rules (KNOWN not excused)."""
    out = set()
    for a, targets in graph.items():
        for b in targets:
            if layer_of(b) < layer_of(a):
                out.add((a, b, f"imports upwards: {LAYERS[layer_of(a)][0]} -> {LAYERS[layer_of(b)][0]}"))
            if a.startswith("tether.trainers.") and b.startswith("tether.instruments"):
                if (a, b) not in EVALUATION:
                    out.add((a, b, "a trainer imports an instrument beyond periodic evaluation"))
            if a in STAGES and b in STAGES:
                out.add((a, b, "a stage trainer imports another"))
            if a.startswith(("tether.instruments", "tether.lab")) and b.startswith("tether.trainers"):
                out.add((a, b, "instruments and the lab never import trainers"))
            pure = a == "tether.theory" or a.startswith("tether.losses")
            if pure and not b.startswith("tether.losses"):
                out.add((a, b, "theory and losses import nothing from tether"))
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_every_module_has_a_layer(graph):
    unplaced = []
    for name in graph:
        try:
            layer_of(name)
        except KeyError:
            unplaced.append(name)
    assert not unplaced, f"add these modules to LAYERS: {unplaced}"


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_theory_and_losses_import_nothing_from_tether(graph):
    pure = {a: b for a, b in graph.items() if a == "tether.theory" or a.startswith("tether.losses")}
    assert "tether.theory" in pure and "tether.losses.preference" in pure  # the files are found at all
    assert {a: sorted(b) for a, b in pure.items() if any(not x.startswith("tether.losses") for x in b)} == {}


def test_imports_follow_the_layers(graph):
    new = sorted(f"{a} -> {b}: {rule}" for a, b, rule in violations(graph) if (a, b) not in KNOWN)
    assert not new, "\n".join(new)


def test_known_violations_still_exist(graph):
    """A KNOWN entry that is gone must leave KNOWN (the set only shrinks)."""
    found = {(a, b) for a, b, _ in violations(graph)}
    assert KNOWN <= found, f"fixed, remove from KNOWN: {sorted(KNOWN - found)}"


# ---------------------------------------------------------------------------------------- the checker itself


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake `tether` package under tmp_path with the given module sources; returns its root."""
    for rel, source in files.items():
        path = tmp_path / "tether" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path / "tether"


def test_the_graph_reads_every_kind_of_import(tmp_path):
    """Top level, inside a function, relative, a name from a package's __init__ vs a submodule."""
    root = _package(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "data.py": "from tether.errors import TetherError\n",
        "lab/__init__.py": "from .gold import gold_reward\n",
        "lab/gold.py": "def gold_reward():\n    import tether.data\n",
        "rewards.py": "from tether.lab import gold_reward\nfrom tether import data\n",
        "rollout.py": "def f():\n    from tether.lab.gold import gold_reward\n",
    })
    assert import_graph(root) == {
        "tether": set(),
        "tether.errors": set(),
        "tether.data": {"tether.errors"},
        "tether.lab": {"tether.lab.gold"},
        "tether.lab.gold": {"tether.data"},
        "tether.rewards": {"tether.lab", "tether.data"},
        "tether.rollout": {"tether.lab.gold"},
    }


def test_a_cycle_through_a_function_level_import_is_found():
    graph = {"tether.a": {"tether.b"}, "tether.b": {"tether.c"}, "tether.c": {"tether.a"}, "tether.d": set()}
    assert find_cycle(graph) == ["tether.a", "tether.b", "tether.c", "tether.a"]
    assert find_cycle({"tether.a": {"tether.b"}, "tether.b": set()}) is None


@pytest.mark.parametrize(
    "importer, imported, rule",
    [
        ("tether.instruments.kl", "tether.trainers.rl", "imports upwards"),
        ("tether.lab.build", "tether.trainers.sft", "never import trainers"),
        ("tether.trainers.ppo", "tether.instruments.evaluate", "beyond periodic evaluation"),
        ("tether.trainers.grpo", "tether.trainers.ppo", "a stage trainer imports another"),
        ("tether.theory", "tether.errors", "import nothing from tether"),
        ("tether.losses.kl", "tether.data", "import nothing from tether"),
        ("tether.data", "tether.rollout", "imports upwards"),
    ],
)
def test_a_forbidden_import_is_caught(graph, importer, imported, rule):
    """Add one forbidden edge to the real graph: the check names it."""
    broken = {a: set(b) for a, b in graph.items()}
    broken[importer].add(imported)
    assert any(a == importer and b == imported and rule in r for a, b, r in violations(broken))
