"""The LM head on the needed positions only (tether.rollout: logits_at, completion_logprobs, response_logits).

The reference is the straightforward computation, written out here: one full forward pass, the
(B, T, V) `log_softmax` in float64, `gather` at the next token, the mask applied. The fast paths must give
the same log-probs and the same parameter gradients, with and without the model's `logits_to_keep`.
"""

import pytest
import torch
import torch.nn.functional as F
from plumbing_helpers import tiny_model

from tether.data import collate_completions, pad, position_ids
from tether.rollout import Rollout, completion_logprobs, logits_at, response_logits
from tether.trainers.sft import SFTTask

PAD = 0
PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]  # ids of the tiny model's 16-token vocabulary
COMPLETIONS = [[14, 15], [4, 6, 11, 15, 3], [12]]


class NoKeep(torch.nn.Module):
    """A causal LM whose forward has no `logits_to_keep`: the fallback computes every logit, then selects."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=5).eval()


@pytest.fixture(scope="module")
def batch():
    return collate_completions(PROMPTS, COMPLETIONS, PAD, side="right")  # (3, 6), right-padded


def naive_logprobs(model, batch):
    """(B, T − 1): log_softmax over the full vocabulary at every position, gathered, masked."""
    ids, attn = batch["input_ids"], batch["attention_mask"]
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits.double()
    logp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return logp * batch["loss_mask"][:, 1:]


def grads(model, value):
    model.zero_grad()
    value.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("wrap", [False, True], ids=["logits_to_keep", "fallback"])
def test_completion_logprobs_equal_full_log_softmax_and_gather(model, batch, wrap):
    fast_model = NoKeep(model) if wrap else model
    fast = completion_logprobs(fast_model, batch)  # (3, 5)
    slow = naive_logprobs(model, batch)
    assert fast.shape == slow.shape == (3, 5)
    assert torch.allclose(fast.double(), slow, atol=1e-5)
    # nothing off the completion tokens, and every completion token after position 0 has a log-prob < 0
    target = batch["loss_mask"][:, 1:].bool()
    assert bool((fast[~target] == 0).all()) and bool((fast[target] < 0).all())
    g_fast = grads(model, completion_logprobs(fast_model, batch).sum())
    g_slow = grads(model, naive_logprobs(model, batch).sum())
    for a, b in zip(g_fast, g_slow, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_completion_logprobs_with_temperature(model, batch):
    ids, attn = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits.double()
        slow = F.log_softmax(logits[:, :-1] / 0.7, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        fast = completion_logprobs(model, batch, temperature=0.7)
    assert torch.allclose(fast.double(), slow * batch["loss_mask"][:, 1:], atol=1e-5)


def test_logits_at_returns_the_selected_rows_in_order(model, batch):
    ids, attn = batch["input_ids"], batch["attention_mask"]
    select = torch.zeros_like(ids, dtype=torch.bool)
    select[0, 2], select[1, 0], select[1, 4], select[2, 3] = True, True, True, True
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits
        got = logits_at(model, ids, attn, select)
    want = torch.stack([full[0, 2], full[1, 0], full[1, 4], full[2, 3]])
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("wrap", [False, True], ids=["logits_to_keep", "fallback"])
def test_response_logits_equal_the_full_pass_sliced(model, wrap):
    prompt_ids, prompt_mask = pad(PROMPTS, PAD, side="left")  # (3, 5)
    response_ids, response_mask = pad(COMPLETIONS, PAD, side="right")  # (3, 5)
    r = Rollout(prompt_ids, prompt_mask, response_ids, response_mask, torch.zeros(response_ids.shape),
                torch.ones(3, dtype=torch.bool), 1.0)
    with torch.no_grad():
        attn = r.attention_mask
        full = model(input_ids=r.input_ids, attention_mask=attn, position_ids=position_ids(attn)).logits
        got = response_logits(NoKeep(model) if wrap else model, r)
    assert got.shape == (3, 5, full.shape[-1])
    m = response_mask.bool()  # the response tokens; the padded slots of a response are 0
    assert torch.allclose(got[m], full[:, 4:-1][m], atol=1e-6)  # P − 1 = 4 predicts the first response token
    assert not m.all() and (got[~m] == 0).all()


def test_sft_loss_equals_the_mean_completion_token_nll(model, batch):
    task = SFTTask(PAD, micro_batch_size=3)
    with torch.no_grad():
        loss, _ = task.loss(model, batch, num_units=10.0)
        slow = -naive_logprobs(model, batch).sum() / 10.0  # 10 completion tokens predicted (col 0 excluded)
    assert float(loss) == pytest.approx(float(slow), abs=1e-5)
