"""Surface statistics of responses: length, repeated n-grams and distinct-2.

Text is read as whitespace-separated words (tokenizer-independent, so policy and base, lab and real data are
measured alike); response *length* in model tokens is counted from the rollouts instead (see `policy.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def repeated_share(text: str, n: int = 2) -> float | None:
    """Share of a response's n-grams that repeat an n-gram seen earlier in it: 1 − |unique| / |all|
    (seq-rep-n of Welleck et al. 2019, "Neural text generation with unlikelihood training"). None when the
    response has fewer than n words. "waves waves waves" (n = 2): bigrams (w w), (w w) → 1 − 1/2 = 0.5."""
    grams = ngrams(text.split(), n)
    if not grams:
        return None
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(texts: Sequence[str], n: int = 2) -> float | None:
    """Distinct-n over a set of responses: distinct n-grams / all n-grams, pooled (Li et al. 2016, "A
    diversity-promoting objective function for neural conversation models"). None without any n-gram."""
    grams = [g for t in texts for g in ngrams(t.split(), n)]
    if not grams:
        return None
    return len(set(grams)) / len(grams)


def repetition(texts: Sequence[str], n: int = 2) -> dict:
    """{"value": mean seq-rep-n over responses with ≥ n words, "n", "distinct_2", "ngram": n}."""
    shares = [s for s in (repeated_share(t, n) for t in texts) if s is not None]
    return {
        "value": sum(shares) / len(shares) if shares else None,
        "n": len(shares),
        "distinct_2": distinct_n(texts, 2),
        "ngram": n,
    }


def _plain_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower().replace("\u2019", "'"))


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words, ignoring case and punctuation ("Sydney." has
    "sydney"; "420" does not have "42")."""
    words, target = _plain_words(text), _plain_words(phrase)
    k = len(target)
    return k > 0 and any(words[i : i + k] == target for i in range(len(words) - k + 1))
