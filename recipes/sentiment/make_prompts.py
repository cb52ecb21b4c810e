"""Write the controlled-sentiment prompts: `python recipes/sentiment/make_prompts.py [--check]`.

Openings of reviews and stories (films, restaurants, products, books, stays, a day's events) that say
nothing good or bad yet — every opening scores exactly 0 with VADER (tests/test_recipe_sentiment.py checks
it) — so that what the policy writes next decides the sentiment: "The pacing of the film was".
Each domain has 12 stems and 10 subjects, 720 openings in all, shuffled by tether's fixed generator
(tether.instruments.probes.generate.Numbers) and split into 120 held out (data/prompts.test.jsonl) and 600
for training (data/prompts.train.jsonl): byte-identical on every machine. --check compares with the
shipped files instead of writing them (exit 1 on a difference).

Records: {"prompt", "domain", "opening"}; the prompt is FORMAT's: a user message asking SmolLM2-Instruct (a
chat model) to continue the opening ("chat"), or the opening itself as plain text to continue ("text").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tether.files import write_or_check
from tether.instruments.probes.generate import Numbers

DATA = Path(__file__).resolve().parent / "data"
FORMAT = "text"  # the chat format's base mean was above +0.3 when measured (issue 18 note, session 7)
TEST = 120  # held-out prompts; the rest train
SEED = 18  # of the shuffle before the split (issue 18)

# domain -> (what the chat prompt calls the text, stems with {x}, subjects)
DOMAINS = {
    "film": ("movie review", [
        "The pacing of {x} was", "I watched {x} on Saturday, and the ending", "The second half of {x}",
        "Going into {x}, I expected", "The soundtrack of {x}", "The lead actor in {x}",
        "After two hours of {x}, I", "The script of {x}", "Most of the dialogue in {x}",
        "The camera work in {x}", "Compared with the trailer, {x}", "The final scene of {x}",
    ], ["the film", "the new western", "the sequel", "the documentary", "the animated feature",
        "the remake", "the courtroom film", "the period piece", "the musical", "the science fiction film"]),
    "restaurant": ("restaurant review", [
        "We had dinner at {x} last night. The service", "The menu at {x}", "The portions at {x}",
        "Our table at {x}", "The dessert at {x}", "I ordered the dish of the day at {x}, and it",
        "The wait for a table at {x}", "The prices at {x}", "The waiter at {x}",
        "The second time we went to {x}, the kitchen", "The soup at {x}", "On a Friday evening, {x}",
    ], ["the new noodle bar", "the corner bistro", "the hotel restaurant", "the pizza place downtown",
        "the seafood restaurant", "the food truck by the station", "the vegetarian cafe", "the steakhouse",
        "the ramen shop", "the family diner"]),
    "product": ("product review", [
        "I have used {x} for three weeks now, and", "Out of the box, {x}", "The instructions for {x}",
        "The build of {x}", "After a month with {x}, I", "The price of {x}", "Setting up {x} took",
        "Compared with my old one, {x}", "The packaging of {x}", "My partner tried {x} and said it",
        "The design of {x}", "The delivery of {x}",
    ], ["the wireless headphones", "the coffee maker", "the phone case", "the standing desk",
        "the electric kettle", "the running shoes", "the laptop bag", "the blender", "the air fryer",
        "the desk lamp"]),
    "book": ("book review", [
        "The first chapter of {x}", "I finished {x} over the weekend. The ending", "The writing in {x}",
        "The characters in {x}", "Halfway through {x}, I", "The cover of {x}", "The author of {x}",
        "Compared with what I had read about it, {x}", "The middle section of {x}",
        "My book club read {x}, and", "The last pages of {x}", "The length of {x}",
    ], ["the debut book", "the memoir", "the cookbook", "the detective story", "the biography",
        "the travel guide", "the short story collection", "the history book", "the poetry collection",
        "the textbook"]),
    "stay": ("hotel review", [
        "We stayed three nights at {x}. The room", "The check-in at {x}", "The breakfast at {x}",
        "The view from {x}", "The location of {x}", "The bathroom at {x}", "The staff at {x}",
        "Our second night at {x}", "The walls at {x}", "The booking for {x}", "The noise at night at {x}",
        "Checking out of {x}, I",
    ], ["the hotel by the airport", "the bed and breakfast", "the beach resort", "the city hostel",
        "the mountain lodge", "the rented cottage", "the cruise ship", "the campsite", "the guesthouse",
        "the business hotel"]),
    "day": ("story", [
        "The morning of {x} started with", "I remember {x} because", "By noon on {x}, we",
        "The weather on {x}", "On {x}, my sister called and", "Nothing about {x} went as planned. First,",
        "Looking back on {x}, I", "The last hour of {x}", "Halfway through {x}, the phone rang and",
        "The evening after {x}, I", "What I will say about {x} is that", "The bus on {x}",
    ], ["Monday", "the first day at the new job", "the trip to the coast", "the move to the new flat",
        "the school reunion", "the long train ride home", "the visit to my grandparents", "the team meeting",
        "the walk up the hill", "the last day of term"]),
}


def prompt_of(kind: str, opening: str, fmt: str = FORMAT):
    """The prompt for an opening: a user message asking for its continuation, or the opening as text."""
    if fmt == "text":
        return opening
    return [{"role": "user", "content": f"Continue this {kind} in one or two sentences: {opening}"}]


def openings() -> list[tuple[str, str, str]]:
    """(domain, kind, opening) for every stem and subject; an opening that starts with the subject gets
    a capital first letter."""
    out = []
    for domain, (kind, stems, subjects) in DOMAINS.items():
        for stem in stems:
            for x in subjects:
                text = stem.format(x=x)
                out.append((domain, kind, text[0].upper() + text[1:]))
    return out


def build(fmt: str = FORMAT) -> dict[str, str]:
    """{file name: JSONL text} of the train and test prompts."""
    items = openings()
    rng = Numbers(SEED)
    for i in range(len(items) - 1, 0, -1):  # Fisher-Yates with the fixed generator
        j = rng.draw(0, i)
        items[i], items[j] = items[j], items[i]
    records = [{"prompt": prompt_of(kind, text, fmt), "domain": domain, "opening": text}
               for domain, kind, text in items]
    split = {"prompts.test.jsonl": records[:TEST], "prompts.train.jsonl": records[TEST:]}
    return {name: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs) for name, rs in split.items()}


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    differ = write_or_check(DATA, build(), check, "python recipes/sentiment/make_prompts.py")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
