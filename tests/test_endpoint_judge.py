"""The OpenAI-compatible endpoint judge (tether/instruments/endpoint_judge.py) against a tiny local HTTP
server written here: what it asks, how it reads the answer tokens' log-probs (and the text when there are
none), that asking both orders cancels a position bias, its one-line errors, the config rules, and
`tether eval --judge URL` end to end."""

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tether.cli import main
from tether.config import load_config
from tether.errors import TetherError
from tether.instruments.endpoint_judge import EndpointJudge, answer_probability
from tether.instruments.eval_dirs import EvalConfig

BIAS = 1.0  # the fake judge's position bias: +1 on the log-odds of "A"


def score(text: str) -> float:
    """The fake judge's taste: one point per 'good' in a response."""
    return float(text.split().count("good"))


class FakeJudge(BaseHTTPRequestHandler):
    """/v1/chat/completions: log-odds of A over B = BIAS + score(A) − score(B), sent as log-probs of "A" and
    "B" (log-softmax over the two) among three top tokens; with the mode "text" no log-probs, the text "B"."""

    requests: list = []
    mode = "logprobs"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization")
        FakeJudge.requests.append({"path": self.path, "body": body, "auth": auth})
        if self.path != "/v1/chat/completions" or body["model"] != "judge-1":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "no such model"}')
            return
        text = body["messages"][0]["content"]
        a = re.search(r"Response A: (.*?)\n\nResponse B:", text, re.S).group(1)
        b = re.search(r"Response B: (.*?)\n\nAnswer", text, re.S).group(1)
        d = BIAS + score(a) - score(b)
        la, lb = -math.log1p(math.exp(-d)), -math.log1p(math.exp(d))
        if FakeJudge.mode == "text":
            choice = {"message": {"role": "assistant", "content": "B"}, "logprobs": None}
        else:
            top = [{"token": " A", "logprob": la}, {"token": "B", "logprob": lb},
                   {"token": "C", "logprob": -30.0}]
            choice = {"message": {"role": "assistant", "content": "A"},
                      "logprobs": {"content": [{"token": " A", "logprob": la, "top_logprobs": top}]}}
        reply = json.dumps({"choices": [choice]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_both_orders_cancel_the_position_bias(server, monkeypatch):
    """P(first) = ½·[σ(1 + d) + 1 − σ(1 − d)] with d = score(first) − score(second) and the server's bias 1:
    d = 0 gives exactly ½ (the bias cancels), d = 1 gives ½·[σ(2) + 1 − σ(0)] = 0.69040, d = −2 gives
    ½·[σ(−1) + 1 − σ(3)] = 0.15818. Each pair costs two requests, for one answer token at temperature 0
    with log-probs, the API key from the named variable as a bearer token."""
    monkeypatch.setenv("MY_KEY", "s3cret")
    FakeJudge.requests.clear()
    judge = EndpointJudge(server, "judge-1", api_key_env="MY_KEY")
    p = judge.prefer(["q1", "q2", "q3"], ["fine", "good good", "x"], ["fine", "good", "good good"])
    expected = [0.5 * (sigmoid(BIAS + d) + 1 - sigmoid(BIAS - d)) for d in (0.0, 1.0, -2.0)]
    assert p == pytest.approx(expected, abs=1e-9)
    assert expected[0] == pytest.approx(0.5, abs=1e-15) and expected[1] == pytest.approx(0.69040, abs=1e-5)
    assert expected[2] == pytest.approx(0.15818, abs=1e-5)
    assert len(FakeJudge.requests) == 6
    body = FakeJudge.requests[0]["body"]
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["logprobs"] is True
    assert "Request: q1" in body["messages"][0]["content"]
    assert FakeJudge.requests[0]["auth"] == "Bearer s3cret"
    assert judge.name == f"endpoint:judge-1@{server}"


def test_a_reply_without_logprobs_is_read_from_its_text(server, monkeypatch):
    """The server answers "B" in both orders and sends no log-probs: P(A) = 0 both times, so the first
    response is preferred with ½·[0 + 1 − 0] = ½ — a judge that always names one position says nothing."""
    monkeypatch.setattr(FakeJudge, "mode", "text")
    assert EndpointJudge(server, "judge-1").prefer(["q"], ["good"], ["bad"]) == [0.5]
    assert answer_probability({"choices": [{"message": {"content": " A."}}]}) == 1.0
    assert answer_probability({"choices": [{"message": {"content": "maybe"}}]}) == 0.5


def test_errors_are_one_line(server):
    with pytest.raises(TetherError, match=r"HTTP 404: \{\"error\": \"no such model\"\}"):
        EndpointJudge(server, "other-model").prefer(["q"], ["a"], ["b"])
    with pytest.raises(TetherError, match="cannot reach it"):
        EndpointJudge("http://127.0.0.1:9/v1", "judge-1", timeout=5).prefer(["q"], ["a"], ["b"])


def test_the_config_needs_the_model_name_with_an_endpoint_and_only_then():
    with pytest.raises(TetherError, match="judge_model"):
        load_config(EvalConfig, None, ["judge=http://127.0.0.1:8000/v1"])
    with pytest.raises(TetherError, match="judge_model"):
        load_config(EvalConfig, None, ["judge_model=judge-1"])
    cfg = load_config(EvalConfig, None, ["judge_model=judge-1"], values={"judge": "http://h:1/v1"})
    assert cfg.judge == "http://h:1/v1" and cfg.judge_model == "judge-1"


def test_tether_eval_with_an_endpoint_judge(server, tmp_path):
    """`tether eval --judge URL judge_model=judge-1` on a tiny model against itself: the win-rate is judged
    by the endpoint (its name in the summary), two requests per held-out prompt."""
    from tether.models import build_tiny_llama, build_word_tokenizer

    tok = build_word_tokenizer("good bad sea hello tell me about the".split())
    model = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    prompts = tmp_path / "p.jsonl"
    rows = ["tell me about the sea", "hello"] * 2
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows))
    FakeJudge.requests.clear()
    args = ["eval", "--policy", str(tmp_path / "m"), "--base", str(tmp_path / "m"), "--prompts", str(prompts),
            "--judge", server, "--out", str(tmp_path / "out"), "judge_model=judge-1", "max_new_tokens=4",
            "probes=never"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    win = summary["instruments"]["win_rate_vs_base"]
    assert win["judge"] == f"endpoint:judge-1@{server}" and win["n"] == 4
    assert len(FakeJudge.requests) == 8
