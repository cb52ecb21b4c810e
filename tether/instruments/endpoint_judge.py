"""A pairwise judge behind an OpenAI-compatible chat-completions endpoint (a local vLLM, llama.cpp or
Ollama server, or a hosted API): `tether eval --judge http://HOST:PORT/v1 judge_model=NAME`.

Each question (tether/instruments/llm_judge.py's TEMPLATE, sent as one user message) is asked for one token
at temperature 0 with `logprobs` and `top_logprobs` (the OpenAI API's names, which these servers follow).
P(A) = softmax over the two answer tokens' log-probs among the top ones: exp(l_A) / (exp(l_A) + exp(l_B)),
an answer token missing from the list counting as probability 0 against the other. A server that returns
no log-probs, or a reply whose top tokens hold neither answer, is read from its text: "A" → 1, "B" → 0,
anything else ½. Both orders are asked and averaged as the local LLM judge does (`both_orders`), which
cancels a position bias (Zheng et al. 2023, sec. 3.3).

The API key, if the server needs one, is read from the environment variable `judge_api_key_env` names
(OPENAI_API_KEY by default) and sent as a bearer token; it is never written anywhere. Only the standard
library's urllib is used. Prompts and responses are sent to that server: do not point it at a service that
should not see them.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request

from tether.errors import TetherError
from tether.instruments.judges import Judge
from tether.instruments.llm_judge import TEMPLATE, both_orders, question_text


def is_endpoint(spec: str | None) -> bool:
    """Whether a --judge value names an endpoint (an http or https URL) rather than a model directory."""
    return bool(spec) and spec.split("://", 1)[0] in ("http", "https")


def answer_probability(reply: dict, answers: tuple[str, str] = ("A", "B")) -> float:
    """P(first answer) from one chat-completions reply (the parsed JSON), as the module docstring says."""
    choice = reply["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    if content:
        top = {}
        for entry in content[0].get("top_logprobs") or [{"token": content[0]["token"],
                                                           "logprob": content[0]["logprob"]}]:
            token = entry["token"].strip()
            if token in answers and token not in top:  # the most likely spelling of each answer
                top[token] = entry["logprob"]
        if top:
            la, lb = (top.get(a, -math.inf) for a in answers)
            m = max(la, lb)
            return math.exp(la - m) / (math.exp(la - m) + math.exp(lb - m))
    text = (choice.get("message") or {}).get("content") or ""
    first = text.strip()[:1]
    return 1.0 if first == answers[0] else 0.0 if first == answers[1] else 0.5


class EndpointJudge(Judge):
    """P(first preferred) from an OpenAI-compatible server's answer-token log-probs, both orders averaged."""

    def __init__(self, base_url: str, model: str, template: str = TEMPLATE,
                 api_key_env: str = "OPENAI_API_KEY", top_logprobs: int = 5, timeout: float = 120.0):
        if not is_endpoint(base_url):
            raise ValueError(f"judge endpoint {base_url!r}: not an http(s) URL")
        if not model:
            raise ValueError("an endpoint judge needs judge_model: the model name the server serves")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.template, self.timeout = model, template, timeout
        self.top_logprobs, self.api_key = top_logprobs, os.environ.get(api_key_env) or None
        self.name = f"endpoint:{model}@{base_url}"

    def ask(self, text: str) -> dict:
        """One chat-completions request for one answer token; the parsed reply. TetherError (one line) when
        the server cannot be reached or answers with an error."""
        body = {"model": self.model, "messages": [{"role": "user", "content": text}], "max_tokens": 1,
                "temperature": 0, "logprobs": True, "top_logprobs": self.top_logprobs}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace").strip().replace("\n", " ")[:200]
            raise TetherError(f"judge endpoint {self.url}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TetherError(f"judge endpoint {self.url}: cannot reach it ({reason})") from None
        except json.JSONDecodeError:
            raise TetherError(f"judge endpoint {self.url}: the reply is not JSON") from None

    def prob_a(self, prompt, first: str, second: str) -> float:
        """P(answer A) for the question with `first` as A and `second` as B: one request."""
        reply = self.ask(question_text(self.template, prompt, first, second))
        try:
            return answer_probability(reply)
        except (KeyError, IndexError, TypeError):
            raise TetherError(f"judge endpoint {self.url}: not a chat-completions reply: "
                              f"{json.dumps(reply)[:200]}") from None

    def prefer(self, prompts, first, second) -> list[float]:
        return both_orders(lambda questions: [self.prob_a(*q) for q in questions], prompts, first, second)
