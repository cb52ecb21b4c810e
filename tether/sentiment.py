"""VADER's sentiment of a response as a gold reward on real text: `reward.source: tether.sentiment:vader`.

VADER (Hutto & Gilbert 2014) is a lexicon and rule-based scorer: each word has a human-rated valence
(vader_lexicon.txt, "good" 1.9, "terrible" -2.1), adjusted by rules for negation, intensifiers, "but",
capitals and punctuation; their sum x is normalised to the compound score x / sqrt(x² + 15) in [-1, 1].
Nobody here wrote it or trained it, which is what a gold reward for the controlled-sentiment task (Ziegler
et al. 2019; Rafailov et al. 2023, sec. 6.1) needs. It comes from the `sentiment` extra:
`pip install 'tether[sentiment]'` (the vaderSentiment package, MIT).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from tether.errors import TetherError


@functools.cache
def analyzer():
    """VADER's analyzer, built once (it reads its lexicon files); TetherError when it is not installed."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise TetherError("tether.sentiment needs the vaderSentiment package: "
                          "pip install 'tether[sentiment]'") from None
    return SentimentIntensityAnalyzer()


def vader(prompts: Sequence, responses: Sequence[str]) -> list[float]:
    """VADER's compound score of each response in [-1, 1] (the prompt is not read): a reward function
    (tether.rewards) returning one float per response; 0.0 for a response with no rated word."""
    scorer = analyzer()
    return [float(scorer.polarity_scores(r)["compound"]) for r in responses]
