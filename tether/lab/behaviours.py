"""Synthetic responses: good demonstrations and the flawed behaviours that the pretraining corpus mixes in.

A response is built from one *content* choice — good, or one content flaw (`wrong`, `sycophantic`, `refuse`,
`comply`, `terse`, `sloppy`, `mismatch`) — and then any of the *form* flaws (`repeat`, `emphatic`, `ramble`).
Good responses vary in phrasing and, for open and benign requests, in how much they say, so demonstrations
are good but not all equally good. A `sloppy` response is a demonstration with word-level noise — a number
misremembered, a word said twice, an off-topic word slipped in — the small mistakes a model's samples make.
A `mismatch` answers as if to a prompt of another family ("i agree , it is 3 ." to a request for a bomb), so
that a reward model learns that a response must fit its prompt."""

from __future__ import annotations

import random

from tether.lab.world import (
    EMPHATIC,
    FAMILIES,
    FUNCTION_WORDS,
    RAMBLE,
    REQUESTS,
    TOPICS,
    PromptInfo,
    answer_text,
    sample_prompt,
    wrong_answer,
)

CONTENT_FLAWS = ("wrong", "sycophantic", "refuse", "comply", "terse", "sloppy", "mismatch")
FORM_FLAWS = ("repeat", "emphatic", "ramble")
FLAWS = CONTENT_FLAWS + FORM_FLAWS
# The base model's bad habits (the issue's "answers wrong, agrees with users, refuses benign requests,
# rambles"): word-level noise and repetition are left out, so that a policy's remaining small mistakes are
# its own sampling noise rather than a learned habit.
PRETRAIN_FLAWS = ("wrong", "sycophantic", "refuse", "comply", "terse", "emphatic", "ramble")

REFUSALS = ("sorry , i can not help with that .", "sorry , that is not safe .", "i can not help with that .")
_ANSWERS = ("{a}", "it is {a} .", "the answer is {a} .")
_DISAGREE = ("no , it is {a} .", "actually it is {a} .", "it is {a} .")
_AGREE = ("you are right , it is {a} .", "i agree , it is {a} .", "it is {a} .")
_SYCOPHANTIC = ("you are right , it is {b} .", "i agree , it is {b} .", "it is {b} .")
_HELP_OPENERS = ("first get", "you need", "use")
_OPEN_OPENERS = ("the {t} has", "there are", "i see")


def applicable_flaws(info: PromptInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(content flaws, form flaws) that make sense for this prompt."""
    if info.family == "task":
        content = ("wrong", "refuse", "sloppy", "mismatch")
    elif info.family == "opinion":
        content = (
            ("wrong", "sycophantic", "refuse", "sloppy", "mismatch")
            if info.belief_wrong
            else ("wrong", "refuse", "sloppy", "mismatch")
        )
    elif info.harmful:
        content = ("comply", "sloppy", "mismatch")
    else:  # benign harm request or open
        content = ("wrong", "refuse", "terse", "sloppy", "mismatch")
    return content, FORM_FLAWS


def habit(info: PromptInfo) -> str:
    """The bad habit this prompt invites: agreeing with a wrong belief, complying with a harmful request,
    and otherwise refusing (a task, a benign request, an open question, an opinion whose belief is right)."""
    if info.belief_wrong:
        return "sycophantic"
    return "comply" if info.harmful else "refuse"


def _listing(rng: random.Random, words, k: int) -> str:
    picked = rng.sample(words, min(k, len(words)))
    return " ".join(picked[:-1]) + " and " + picked[-1] if k > 1 else picked[0]


def _other_topic_words(rng: random.Random, topic: str | None) -> tuple[str, ...]:
    """The relevant words of a random topic or request other than `topic`."""
    return rng.choice([ws for t, ws in (*TOPICS.items(), *REQUESTS.items()) if t != topic])


def _noisy_numbers(rng: random.Random, info: PromptInfo) -> tuple[int, ...]:
    """The answer with each number, independently, misremembered (a digit, or a nearby number for sums)."""
    noisy = []
    for n in info.answer:
        if rng.random() < 0.4:
            n = rng.randint(max(0, n - 3), n + 3) if info.kind == "add" else rng.randint(0, 9)
        noisy.append(n)
    return tuple(noisy)


def _noisy_listing(rng: random.Random, info: PromptInfo, k: int) -> str:
    """k words: each a new relevant word, or (one time in five each) a repeat or an off-topic word."""
    fresh = list(info.relevant_words)
    rng.shuffle(fresh)
    picked: list[str] = []
    for _ in range(k):
        u = rng.random()
        if u < 0.2 and picked:
            picked.append(rng.choice(picked))
        elif u < 0.4 or not fresh:
            picked.append(rng.choice(_other_topic_words(rng, info.topic)))
        else:
            picked.append(fresh.pop())
    return " ".join(picked[:-1]) + " and " + picked[-1] if k > 1 else picked[0]


def _sloppy(rng: random.Random, info: PromptInfo) -> str:
    if info.answer is not None:
        forms = _ANSWERS if info.family == "task" else rng.choice((_DISAGREE, _AGREE))
        return rng.choice(forms).format(a=answer_text(_noisy_numbers(rng, info)))
    if info.harmful and rng.random() < 0.7:
        return rng.choice(REFUSALS)
    if info.family == "harm":
        return f"{rng.choice(_HELP_OPENERS)} {_noisy_listing(rng, info, rng.randint(3, 5))} ."
    return (
        f"{rng.choice(_OPEN_OPENERS).format(t=info.topic)} {_noisy_listing(rng, info, rng.randint(2, 6))} ."
    )


def _mismatch(rng: random.Random, info: PromptInfo) -> str:
    """A good response to a prompt of another family (answers to questions often agree with the user)."""
    family = rng.choice([f for f in FAMILIES if f != info.family and {f, info.family} != {"task", "opinion"}])
    other = sample_prompt(rng, family, belief_correct_share=0.5)
    if other.answer is not None and rng.random() < 0.5:
        return rng.choice(_AGREE[:2]).format(a=answer_text(other.answer))
    return _content(rng, other, None)


def _content(rng: random.Random, info: PromptInfo, flaw: str | None) -> str:
    """The response before form flaws: good when `flaw` is None."""
    if flaw == "sloppy":
        return _sloppy(rng, info)
    if flaw == "mismatch":
        return _mismatch(rng, info)
    if flaw == "refuse" or (info.harmful and flaw is None):
        return rng.choice(REFUSALS)
    if info.answer is not None:
        if flaw == "wrong":
            return rng.choice(_ANSWERS).format(a=answer_text(wrong_answer(rng, info)))
        if flaw == "sycophantic":
            return rng.choice(_SYCOPHANTIC).format(b=answer_text(info.belief))
        if info.family == "opinion":
            forms = _DISAGREE if info.belief_wrong else _AGREE
            return rng.choice(forms).format(a=answer_text(info.answer))
        return rng.choice(_ANSWERS).format(a=answer_text(info.answer))
    words = info.relevant_words
    if flaw == "wrong":
        words = _other_topic_words(rng, info.topic)
    if info.family == "harm":  # benign help, or compliance with a harmful request
        k = 1 if flaw == "terse" else rng.randint(3, 5)
        return f"{rng.choice(_HELP_OPENERS)} {_listing(rng, words, k)} ."
    k = 1 if flaw == "terse" else rng.randint(2, 6)
    return f"{rng.choice(_OPEN_OPENERS).format(t=info.topic)} {_listing(rng, words, k)} ."


def _repeat(rng: random.Random, text: str) -> str:
    """Say a content word again: in place of a later content word (same length: "blue waves" -> "blue
    blue"), or inserted 1-3 more times, right after it or later in the text."""
    words = text.split()
    spots = [i for i, w in enumerate(words) if w not in FUNCTION_WORDS] or list(range(len(words)))
    i = rng.choice(spots)
    later = [j for j in spots if j > i and words[j] != words[i]]
    if later and rng.random() < 0.5:
        words[rng.choice(later)] = words[i]
        return " ".join(words)
    for _ in range(rng.randint(1, 3)):
        j = i + 1 if rng.random() < 0.5 else rng.randint(i + 1, len(words))
        words.insert(j, words[i])
    return " ".join(words)


def _emphatic(rng: random.Random, text: str) -> str:
    prefix = [rng.choice(EMPHATIC) for _ in range(rng.randint(1, 3))]
    return " ".join(prefix) + " , " + text


def _ramble(rng: random.Random, text: str) -> str:
    """Append 3-10 words of filler, sometimes off-topic."""
    extra: list[str] = []
    target = rng.randint(3, 10)
    while len(extra) < target:
        extra += rng.choice(RAMBLE) if rng.random() < 0.7 else rng.sample(_other_topic_words(rng, None), 2)
    return text + " " + " ".join(extra)


def respond(rng: random.Random, info: PromptInfo, flaws: tuple[str, ...] = (), max_words: int = 24) -> str:
    """A response to `info` with the given flaws (none: a good demonstration), cut at `max_words` words."""
    content = [f for f in flaws if f in CONTENT_FLAWS]
    if len(content) > 1:
        raise ValueError(f"at most one content flaw, got {content}")
    text = _content(rng, info, content[0] if content else None)
    for flaw, apply in (("repeat", _repeat), ("emphatic", _emphatic), ("ramble", _ramble)):
        if flaw in flaws:
            text = apply(rng, text)
    return " ".join(text.split()[:max_words])


def perturb(rng: random.Random, info: PromptInfo, text: str, flaw: str, max_words: int = 24) -> str:
    """`text` with one more flaw: a form flaw is applied to `text` itself (a minimal pair); a content flaw
    replaces the content (keeping any form flaws out of it)."""
    if flaw in CONTENT_FLAWS:
        return respond(rng, info, (flaw,), max_words)
    apply = {"repeat": _repeat, "emphatic": _emphatic, "ramble": _ramble}[flaw]
    return " ".join(apply(rng, text).split()[:max_words])


def random_flaws(
    rng: random.Random, info: PromptInfo, good_share: float, allowed: tuple[str, ...] = FLAWS
) -> tuple[str, ...]:
    """No flaw with probability `good_share`; otherwise at least one of `allowed`: a content flaw half of the
    time (for an opinion with a wrong belief, half of those are `sycophantic`), each form flaw with
    probability 0.35."""
    if rng.random() < good_share:
        return ()
    content, form = (tuple(f for f in group if f in allowed) for group in applicable_flaws(info))
    if "sycophantic" in content and rng.random() < 0.5:
        content = ("sycophantic",)  # the flaw this prompt exists to show: make it common
    picked = [rng.choice(content)] if content and rng.random() < 0.5 else []
    picked += [f for f in form if rng.random() < 0.35]
    return tuple(picked) or (rng.choice(content + form),)


def sample_response(
    rng: random.Random,
    info: PromptInfo,
    good_share: float,
    max_words: int = 24,
    allowed: tuple[str, ...] = FLAWS,
) -> str:
    """A response that is good with probability `good_share` and otherwise shows one or more flaws."""
    return respond(rng, info, random_flaws(rng, info, good_share, allowed), max_words)
