"""The RLVR recipe's task: one- and two-step arithmetic word problems with exact answers.

    python recipes/rlvr-arithmetic/make_data.py            # writes data/train.jsonl and data/test.jsonl
    python recipes/rlvr-arithmetic/make_data.py --check    # exit 1 when the shipped files differ

Deterministic: numbers come from the probe generator's fixed linear congruential generator
(tether.instruments.probes.generate.Numbers, not `random`), templates are written here, so the output is
byte-identical on every machine for a seed (the shipped files: seed 0). Half the problems take one step,
half two; the first of every six distinct questions goes to the test set (250, half of each kind) and the
rest to the training set (1,250), so no question is in both.
Each record: {"prompt": [{"role": "user", "content": question + INSTRUCTION}], "answer": "42", "steps": 1}.
Numbers are small (sums under 60, products of one-digit numbers) so that a 135M model is neither at 0 % nor
at the ceiling; every answer is a whole number ≥ 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tether.files import write_or_check
from tether.instruments.probes.generate import Numbers

DATA = Path(__file__).resolve().parent / "data"
INSTRUCTION = " Give the final answer on the last line as 'Answer: <number>'."
N_RECORDS, TEST_EVERY = 1500, 6  # 1,500 distinct questions: 250 held out, 1,250 to train on
SFT_RECORDS = 250  # training problems that also get a worked reply (sft.jsonl)

NAMES = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Mo", "Nia",
         "Omar", "Pia", "Raj", "Sara", "Tom", "Uma"]
FRUITS = ["apples", "pears", "oranges", "plums", "lemons", "peaches"]
THINGS = ["stickers", "marbles", "stamps", "cards", "shells", "coins"]
SHOP = [("pencil", "pencils"), ("notebook", "notebooks"), ("cup", "cups"), ("ball", "balls"),
        ("sandwich", "sandwiches"), ("ticket", "tickets")]


def _name(rng: Numbers, other: str | None = None) -> str:
    while True:
        name = NAMES[rng.draw(0, len(NAMES) - 1)]
        if name != other:
            return name


def _pick(rng: Numbers, items: list):
    return items[rng.draw(0, len(items) - 1)]


# ----------------------------------------------------------------------------------------- one step


def buys_more(rng):
    name, fruit, a, b = _name(rng), _pick(rng, FRUITS), rng.draw(2, 20), rng.draw(2, 20)
    return f"{name} has {a} {fruit}. {name} buys {b} more. How many {fruit} does {name} have now?", a + b, \
        f"{a} + {b} = {a + b}"


def gives_away(rng):
    name, thing = _name(rng), _pick(rng, THINGS)
    friend = _name(rng, name)
    a = rng.draw(8, 30)
    b = rng.draw(1, a - 1)
    return f"{name} had {a} {thing} and gave {b} of them to {friend}. How many {thing} does {name} have " \
           "left?", a - b, \
        f"{a} - {b} = {a - b}"


def price_times(rng):
    (one, many), price, n = _pick(rng, SHOP), rng.draw(2, 9), rng.draw(2, 9)
    return f"A shop sells one {one} for {price} dollars. How many dollars do {n} {many} cost?", price * n, \
        f"{n} * {price} = {price * n}"


def train_cars(rng):
    a, b = rng.draw(3, 20), rng.draw(2, 12)
    return f"A train has {a} cars. At the station {b} more cars are added. How many cars does the train " \
           "have now?", a + b, \
        f"{a} + {b} = {a + b}"


def age_later(rng):
    name, a, b = _name(rng), rng.draw(4, 40), rng.draw(2, 15)
    return f"{name} is {a} years old. How old will {name} be in {b} years?", a + b, \
        f"{a} + {b} = {a + b}"


def age_younger(rng):
    name = _name(rng)
    sibling = _name(rng, name)
    a = rng.draw(10, 40)
    b = rng.draw(2, a - 2)
    return f"{name} is {a} years old. {sibling} is {b} years younger than {name}. How old is " \
           f"{sibling}?", a - b, \
        f"{a} - {b} = {a - b}"


def boxes_each(rng):
    k, m = rng.draw(2, 9), rng.draw(2, 9)
    return f"There are {k} boxes with {m} eggs in each box. How many eggs are there in all?", k * m, \
        f"{k} * {m} = {k * m}"


def share_equally(rng):
    k, q = rng.draw(2, 6), rng.draw(2, 9)
    return f"{k * q} cookies are shared equally among {k} children. How many cookies does each child " \
           "get?", q, f"{k * q} / {k} = {q}"


# ----------------------------------------------------------------------------------------- two steps


def buys_then_eats(rng):
    name, fruit, a, b = _name(rng), _pick(rng, FRUITS), rng.draw(3, 20), rng.draw(2, 15)
    c = rng.draw(1, a + b - 1)
    return f"{name} has {a} {fruit}, buys {b} more and then eats {c}. How many {fruit} does {name} have " \
           "left?", a + b - c, \
        f"{a} + {b} = {a + b}\n{a + b} - {c} = {a + b - c}"


def change_from_bill(rng):
    name, (one, many), price, n = _name(rng), _pick(rng, SHOP), rng.draw(2, 6), rng.draw(2, 5)
    bill = (20, 50)[price * n > 20]
    return f"One {one} costs {price} dollars. {name} buys {n} {many} and pays with a {bill}-dollar bill. " \
           f"How many dollars of change does {name} get?", bill - price * n, \
        f"{n} * {price} = {price * n}\n{bill} - {price * n} = {bill - price * n}"


def train_stop(rng):
    a = rng.draw(10, 40)
    b, c = rng.draw(2, a - 1), rng.draw(2, 20)
    return f"A train leaves with {a} passengers. At the first stop {b} passengers get off and {c} get on. " \
           "How many passengers are on the train now?", a - b + c, \
        f"{a} - {b} = {a - b}\n{a - b} + {c} = {a - b + c}"


def twice_as_old_later(rng):
    name = _name(rng)
    parent = _name(rng, name)
    a, b = rng.draw(3, 20), rng.draw(2, 10)
    return f"{name} is {a} years old. {parent} is twice as old as {name}. How old will {parent} be in {b} " \
           "years?", 2 * a + b, \
        f"2 * {a} = {2 * a}\n{2 * a} + {b} = {2 * a + b}"


def bags_give_away(rng):
    name, thing, k, m = _name(rng), _pick(rng, THINGS), rng.draw(2, 6), rng.draw(2, 9)
    c = rng.draw(2, k * m - 1)  # k·m ≥ 4
    return f"{name} has {k} bags with {m} {thing} in each bag and gives away {c} {thing}. How many {thing} " \
           f"does {name} have left?", k * m - c, \
        f"{k} * {m} = {k * m}\n{k * m} - {c} = {k * m - c}"


def pages_read(rng):
    name, p, d, q = _name(rng), rng.draw(2, 9), rng.draw(2, 7), rng.draw(2, 20)
    return f"{name} reads {p} pages every day for {d} days and then {q} more pages. How many pages does " \
           f"{name} read in all?", p * d + q, \
        f"{p} * {d} = {p * d}\n{p * d} + {q} = {p * d + q}"


def two_purchases(rng):
    name = _name(rng)
    (one_a, many_a), (one_b, many_b) = _pick(rng, SHOP), _pick(rng, SHOP)
    while one_b == one_a:
        one_b, many_b = _pick(rng, SHOP)
    n, p, q = rng.draw(2, 5), rng.draw(2, 6), rng.draw(2, 12)
    return f"{name} buys {n} {many_a} at {p} dollars each and one {one_b} for {q} dollars. How many " \
           f"dollars does {name} spend?", n * p + q, \
        f"{n} * {p} = {n * p}\n{n * p} + {q} = {n * p + q}"


def shared_after_buying(rng):
    name, fruit, k, q = _name(rng), _pick(rng, FRUITS), rng.draw(2, 5), rng.draw(2, 6)
    a = rng.draw(2, k * q - 1)  # k·q ≥ 4
    return f"{name} has {a} {fruit} and buys {k * q - a} more. {name} shares all of them equally among {k} " \
           f"friends. How many {fruit} does each friend get?", q, \
        f"{a} + {k * q - a} = {k * q}\n{k * q} / {k} = {q}"


TEMPLATES = {
    1: [buys_more, gives_away, price_times, train_cars, age_later, age_younger, boxes_each, share_equally],
    2: [buys_then_eats, change_from_bill, train_stop, twice_as_old_later, bags_give_away, pages_read,
        two_purchases, shared_after_buying],
}


def records(seed: int = 0) -> list[dict]:
    """N_RECORDS distinct problems in runs of TEST_EVERY one-step, then TEST_EVERY two-step ones (so the
    held-out first of every TEST_EVERY is one-step and two-step in turn), each template drawn at random."""
    rng, out, seen = Numbers(seed), [], set()
    while len(out) < N_RECORDS:
        steps = 1 + (len(out) // TEST_EVERY) % 2
        question, answer, working = _pick(rng, TEMPLATES[steps])(rng)
        if question in seen:
            continue
        seen.add(question)
        content = question + INSTRUCTION
        out.append({"prompt": [{"role": "user", "content": content}], "answer": str(answer), "steps": steps,
                    "working": working})
    return out


def _problem(record: dict) -> dict:
    """The record as train.jsonl and test.jsonl hold it: without its working."""
    return {k: v for k, v in record.items() if k != "working"}


def worked(record: dict) -> dict:
    """An SFT record: the problem and a worked reply, each step's arithmetic on its own line and then the
    answer line the instruction asks for."""
    reply = f"{record['working']}\nAnswer: {record['answer']}"
    return {"messages": [*record["prompt"], {"role": "assistant", "content": reply}]}


def build(seed: int = 0) -> dict[str, str]:
    """{file name: JSONL text}: every TEST_EVERY-th record held out in test.jsonl, the rest in train.jsonl,
    and the first SFT_RECORDS training problems with worked replies in sft.jsonl (a warm start: the format
    and the working, before RL)."""
    rows = records(seed)
    train = [r for i, r in enumerate(rows) if i % TEST_EVERY]
    test = [r for i, r in enumerate(rows) if i % TEST_EVERY == 0]
    split = {"train.jsonl": [_problem(r) for r in train], "test.jsonl": [_problem(r) for r in test],
             "sft.jsonl": [worked(r) for r in train[:SFT_RECORDS]]}
    return {name: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs) for name, rs in split.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the files in --out, write nothing")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed (the shipped files: 0)")
    parser.add_argument("--out", default=str(DATA), help="the directory of train.jsonl and test.jsonl")
    args = parser.parse_args(argv)
    command = "python recipes/rlvr-arithmetic/make_data.py"
    differ = write_or_check(args.out, build(args.seed), args.check, command)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
