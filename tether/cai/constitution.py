"""A constitution: the written principles an AI critic and judge follow (Bai et al. 2022, "Constitutional AI",
arXiv:2212.08073, sec. 3.1 for critique/revision requests and sec. 4.1 for the multiple-choice comparison).

The YAML file (tether/configs/constitution.yaml is the default):

    name: my-constitution
    template: |                        # the judge's question; {prompt} {first} {second} {question}
      ... Request: {prompt} ... (A) {first} ... (B) {second} ... {question} ...
    answers: ["A", "B"]                # texts whose first token means A and B (optional)
    principles:
      - name: harmless
        critique: "Point out how the response could be harmful ..."
        revision: "Rewrite the response to remove the harm ..."
        comparison: "Which response is less harmful ...?"
        lab_focus: {safety: 1.0, over_refusal: 1.0}   # optional: gold-reward parts the lab rater reads
    lab_rater:                          # optional: the lab rater's own imperfections (cai/judges.py LabRater)
      biases: {length: 0.02, refusal: 0.1}
      temperature: 0.1
      position_bias: 0.05

`load_constitution(path)` checks every field and raises `DataError` ("FILE:LINE: problem") naming the line of
the offending node, so a malformed file fails in one line before any model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tether.errors import DataError

DEFAULT_CONSTITUTION = Path(__file__).resolve().parent.parent / "configs" / "constitution.yaml"
TEMPLATE_FIELDS = ("{prompt}", "{first}", "{second}", "{question}")
RATER_KEYS = ("biases", "temperature", "position_bias")


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str  # the critique request: what is wrong with the response under this principle?
    revision: str  # the revision request: asks the critic to rewrite the response accordingly
    comparison: str  # the judge's question ("Which response is less harmful ...?")
    lab_focus: dict[str, float] = field(default_factory=dict)  # gold part -> weight (the lab rater only)


@dataclass(frozen=True)
class RaterSettings:
    """The lab rater's imperfections (see tether/cai/judges.py, LabRater)."""

    biases: dict[str, float] = field(default_factory=dict)
    temperature: float = 0.1
    position_bias: float = 0.0


@dataclass(frozen=True)
class Constitution:
    name: str
    template: str
    principles: tuple[Principle, ...]
    answers: tuple[str, str] = ("A", "B")
    lab_rater: RaterSettings = field(default_factory=RaterSettings)
    path: str = "<constitution>"

    def question(self, principle: Principle, prompt: str, first: str, second: str) -> str:
        """The judge's full question for one comparison under `principle`."""
        return self.template.format(prompt=prompt, first=first, second=second, question=principle.comparison)


class _Reader:
    """Reads composed YAML nodes, raising DataError at the node's line."""

    def __init__(self, path):
        self.path = path
        self.loader = yaml.SafeLoader("")

    def fail(self, node, problem: str):
        raise DataError(self.path, node.start_mark.line + 1, problem)

    def mapping(self, node, what: str, known: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping")
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key not in known:
                self.fail(key_node, f"{what}: unknown key {key!r} (known: {', '.join(known)})")
            if key in out:
                self.fail(key_node, f"{what}: duplicate key {key!r}")
            out[key] = value_node
        missing = [k for k in required if k not in out]
        if missing:
            self.fail(node, f"{what}: missing {', '.join(repr(k) for k in missing)}")
        return out

    def text(self, node, what: str) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value.strip():
            self.fail(node, f"{what} must be a non-empty string")
        return value

    def number(self, node, what: str, minimum: float | None = None) -> float:
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(node, f"{what} must be a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(node, f"{what} must be >= {minimum}, got {value!r}")
        return float(value)

    def weights(self, node, what: str, names: tuple[str, ...]) -> dict[str, float]:
        nodes = self.mapping(node, what, names)
        return {k: self.number(v, f"{what}.{k}") for k, v in nodes.items()}

    def value(self, node):
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, "expected a single value, got a list or mapping")
        return self.loader.construct_object(node, deep=True)


def _principle(r: _Reader, node, index: int) -> Principle:
    from tether.lab.gold import PART_NAMES

    what = f"principles[{index}]"
    keys = ("name", "critique", "revision", "comparison", "lab_focus")
    nodes = r.mapping(node, what, keys, required=keys[:4])
    focus = r.weights(nodes["lab_focus"], f"{what}.lab_focus", PART_NAMES) if "lab_focus" in nodes else {}
    return Principle(
        name=r.text(nodes["name"], f"{what}.name"),
        critique=r.text(nodes["critique"], f"{what}.critique"),
        revision=r.text(nodes["revision"], f"{what}.revision"),
        comparison=r.text(nodes["comparison"], f"{what}.comparison"),
        lab_focus=focus,
    )


def _rater(r: _Reader, node) -> RaterSettings:
    from tether.lab.labelers import BIASES

    nodes = r.mapping(node, "lab_rater", RATER_KEYS)
    biases = r.weights(nodes["biases"], "lab_rater.biases", BIASES) if "biases" in nodes else {}
    temperature, position = 0.1, 0.0
    if "temperature" in nodes:
        temperature = r.number(nodes["temperature"], "lab_rater.temperature", 0)
    if "position_bias" in nodes:
        position = r.number(nodes["position_bias"], "lab_rater.position_bias")
    return RaterSettings(biases, temperature, position)


def load_constitution(path: str | Path | None = None) -> Constitution:
    """The constitution in `path` (default: the packaged one); DataError "FILE:LINE: problem" if malformed."""
    path = Path(path) if path is not None else DEFAULT_CONSTITUTION
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(path, None, f"cannot read: {e.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise DataError(path, line, f"not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if root is None:
        raise DataError(path, None, "empty constitution")
    r = _Reader(path)
    keys = ("name", "template", "answers", "principles", "lab_rater")
    nodes = r.mapping(root, "constitution", keys, required=("name", "template", "principles"))
    template = r.text(nodes["template"], "template")
    absent = [f for f in TEMPLATE_FIELDS if f not in template]
    if absent:
        r.fail(nodes["template"], f"template must contain {', '.join(absent)}")
    try:
        template.format(prompt="", first="", second="", question="")
    except (KeyError, IndexError, ValueError) as e:
        r.fail(nodes["template"], f"template has a field other than {', '.join(TEMPLATE_FIELDS)}: {e}")
    principles_node = nodes["principles"]
    if not isinstance(principles_node, yaml.SequenceNode) or not principles_node.value:
        r.fail(principles_node, "principles must be a non-empty list")
    principles = tuple(_principle(r, n, i) for i, n in enumerate(principles_node.value))
    names = [p.name for p in principles]
    for i, name in enumerate(names):
        if name in names[:i]:
            r.fail(principles_node.value[i], f"duplicate principle name {name!r}")
    answers = ("A", "B")
    if "answers" in nodes:
        node = nodes["answers"]
        if not isinstance(node, yaml.SequenceNode) or len(node.value) != 2:
            r.fail(node, "answers must be a list of two strings (the texts for A and for B)")
        answers = tuple(r.text(n, "answers[]") for n in node.value)
        if answers[0] == answers[1]:
            r.fail(node, "answers must differ")
    rater = _rater(r, nodes["lab_rater"]) if "lab_rater" in nodes else RaterSettings()
    name = r.text(nodes["name"], "name")
    return Constitution(name, template, principles, answers, rater, str(path))
