"""recipes/sentiment (the DPO paper's controlled-sentiment frontier, issue 18 part 2) on tiny models: the
shipped prompts are the generator's output and say nothing good or bad yet, ..."""

import importlib.util
import json
from pathlib import Path

from tether.sentiment import vader

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sentiment"


def recipe_module(name: str):
    """recipes/sentiment/<name>.py imported as a module (the recipe's scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"sentiment_{name}", RECIPE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_shipped_prompts_are_the_generators_output_and_neutral():
    """The two files equal make_prompts.build() byte for byte (--check agrees); >= 500 train, >= 100 test,
    no opening in both; every opening scores exactly 0 with VADER (not already positive or negative); each
    prompt holds its opening."""
    make = recipe_module("make_prompts")
    built = make.build()
    for name, text in built.items():
        assert (RECIPE / "data" / name).read_text(encoding="utf-8") == text, name
    assert make.main(["--check"]) == 0
    train, test = (read_jsonl(RECIPE / "data" / f"prompts.{s}.jsonl") for s in ("train", "test"))
    assert len(train) >= 500 and len(test) >= 100
    assert not {r["opening"] for r in train} & {r["opening"] for r in test}
    openings = [r["opening"] for r in train + test]
    assert len(set(openings)) == len(openings)
    assert vader(None, openings) == [0.0] * len(openings)
    for r in train + test:
        content = r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"]
        assert content.endswith(r["opening"])
