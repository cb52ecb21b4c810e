"""tether.rollout: KV-cached batched sampling on a tiny random Llama.

The references are independent computations: each sampled row is re-scored alone, unpadded, with one
plain forward pass and `log_softmax(logits / T)` written out here; the token-draw frequencies are checked
against probabilities worked out by hand.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from plumbing_helpers import tiny_model, word_id

from tether.data import pad
from tether.models import build_word_tokenizer
from tether.rollout import Rollout, _draw, decode_responses, sample, score_responses

EOS, PAD = 3, 0
PROMPTS = [[word_id("a")], [word_id("b"), word_id("c"), word_id("d")], [word_id("e"), word_id("f")]]


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3).eval()


def _sample(model, prompts, extra_pad=0, seed=0, **kw):
    ids, mask = pad(prompts, PAD, side="left")
    if extra_pad:
        ids = torch.cat([torch.full((len(prompts), extra_pad), PAD), ids], 1)
        mask = torch.cat([torch.zeros((len(prompts), extra_pad), dtype=torch.long), mask], 1)
    kw = {"max_new_tokens": 12, "eos_token_id": EOS, "pad_token_id": PAD, **kw}
    return sample(model, ids, mask, generator=torch.Generator().manual_seed(seed), **kw)


def _rescore_alone(model, prompt, response, temperature):
    """Log-probs of `response` after `prompt`, from one forward pass over the unpadded sequence."""
    seq = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0].double()  # (T, V)
    logp = F.log_softmax(logits / temperature, dim=-1)
    return [logp[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(response)]


def _rows(r):
    """Per row: (response tokens where the mask is 1, their log-probs)."""
    out = []
    for ids, m, lp in zip(r.response_ids, r.response_mask, r.logprobs, strict=True):
        n = int(m.sum())
        out.append((ids[:n].tolist(), lp[:n].tolist()))
    return out


def test_logprobs_match_a_full_forward_pass_of_each_row_alone(model):
    r = _sample(model, PROMPTS, temperature=0.7, top_p=0.9)
    for prompt, (tokens, logps) in zip(PROMPTS, _rows(r), strict=True):
        assert logps == pytest.approx(_rescore_alone(model, prompt, tokens, 0.7), abs=1e-5)
    # score_responses (the trainer's forward pass over the padded batch) agrees too
    assert torch.allclose(score_responses(model, r), r.logprobs, atol=1e-5)


def test_extra_left_padding_changes_nothing(model):
    plain, padded = _sample(model, PROMPTS, seed=5), _sample(model, PROMPTS, extra_pad=3, seed=5)
    assert torch.equal(plain.response_ids, padded.response_ids)
    assert torch.equal(plain.response_mask, padded.response_mask)
    assert torch.allclose(plain.logprobs, padded.logprobs, atol=1e-5)


def test_same_seed_same_samples_other_seed_other_samples(model):
    a, b, c = (_sample(model, PROMPTS, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.response_ids, c.response_ids)


def test_rows_stop_at_eos_and_are_padded_after_it(model):
    """Sampling at temperature 3 from a random 16-token model, EOS (1 of 16 tokens) ends some rows early."""
    r = _sample(model, PROMPTS * 4, temperature=3.0, max_new_tokens=10, seed=0)
    assert r.ended.any() and not r.ended.all()
    for ids, m, lp, ended in zip(r.response_ids, r.response_mask, r.logprobs, r.ended, strict=True):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # the mask is a prefix
        assert (ids[n:] == PAD).all() and (lp[n:] == 0).all()
        if ended:
            assert ids[n - 1] == EOS and (ids[: n - 1] != EOS).all()  # EOS is the last masked token
        else:
            assert n == r.response_ids.shape[1] and (ids != EOS).all()


class _EosEverywhere(torch.nn.Module):
    """The tiny model with +100 on the EOS logit: every row ends at its first token."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, position_ids, use_cache, cache=None):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, cache=cache)
        out.logits[..., EOS] += 100.0
        return out


def test_repeated_prompts_share_one_prefill_and_each_row_is_still_its_own(model):
    """GRPO's layout, G = 3 copies of each prompt in a row (plus one more copy of the first at the end): the
    prompt pass runs on the 3 distinct rows only, with the LM head on the last position (logits_to_keep 1),
    and every sampled row's log-probs still match a forward pass of that row alone."""
    prompts = [p for p in PROMPTS for _ in range(3)] + [PROMPTS[0]]
    shapes = []

    def record(module, args, kwargs):
        shapes.append((tuple(kwargs["input_ids"].shape), kwargs.get("logits_to_keep")))

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        r = _sample(model, prompts, temperature=1.0, seed=2)
    finally:
        hook.remove()
    assert shapes[0] == ((3, 3), 1) and all(s[0][0] <= 10 for s in shapes[1:])  # ended rows leave the batch
    for prompt, (tokens, logps) in zip(prompts, _rows(r), strict=True):
        assert logps == pytest.approx(_rescore_alone(model, prompt, tokens, 1.0), abs=1e-5)
    assert len({tuple(t) for t, _ in _rows(r)}) > 3  # the copies of a prompt drew different responses


def test_ended_rows_leave_the_batch_and_every_row_draws_as_if_sampled_alone(model):
    """12 rows at temperature 3 (EOS ends some early, as above): the decode steps run on fewer rows once
    rows have ended, and each row's tokens are those of an independent computation — the row alone, a full
    forward pass per step without a cache, the CDF inverted here at the uniform number the row gets from the
    generator's stream (one torch.rand(12) per step, the row's entry), whatever the other rows did."""
    prompts, T = PROMPTS * 4, 10
    sizes = []
    hook = model.register_forward_pre_hook(lambda m, a, k: sizes.append(k["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        r = _sample(model, prompts, temperature=3.0, max_new_tokens=T, seed=0)
    finally:
        hook.remove()
    assert r.ended.any() and min(sizes) < len(prompts)
    g = torch.Generator().manual_seed(0)
    draws = [torch.rand(len(prompts), generator=g, dtype=torch.float64) for _ in range(T)]  # (B,) per step
    for i, (prompt, (tokens, _)) in enumerate(zip(prompts, _rows(r), strict=True)):
        seq, want = list(prompt), []
        for t in range(T):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1].double()
            cdf = F.softmax(logits / 3.0, -1).cumsum(-1)
            token = int(torch.searchsorted(cdf, draws[t][i] * cdf[-1], right=True))
            want.append(token)
            seq.append(token)
            if token == EOS:
                break
        assert tokens == want, (i, tokens, want)


def test_sampling_stops_once_every_row_has_ended(model):
    r = _sample(_EosEverywhere(model), PROMPTS, max_new_tokens=12)
    assert r.response_ids.tolist() == [[EOS]] * 3 and r.ended.all()
    assert r.response_lengths.tolist() == [1, 1, 1]


def test_tiny_top_p_is_greedy(model):
    """top_p → 0 keeps only the most likely token, so it must match temperature 0 (argmax)."""
    greedy, nucleus = _sample(model, PROMPTS, temperature=0.0), _sample(model, PROMPTS, top_p=1e-9)
    assert torch.equal(greedy.response_ids, nucleus.response_ids)


def test_draw_frequencies_follow_the_distribution_and_top_p():
    """p = (0.5, 0.3, 0.2): 20000 draws land within 0.015 of p (the standard error is ≤ 0.0036).
    With top_p = 0.6 the kept set is {0, 1} (mass before token 2 is 0.8 ≥ 0.6), renormalised to
    (0.625, 0.375, 0); the recorded log-prob stays log p, not log of the renormalised value."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).expand(20000, 3)
    g = torch.Generator().manual_seed(0)
    tokens, logps = _draw(logits, 1.0, 1.0, g)
    freq = torch.bincount(tokens, minlength=3).double() / 20000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.015)
    assert torch.allclose(logps, torch.log(torch.tensor([0.5, 0.3, 0.2]))[tokens], atol=1e-6)
    tokens, logps = _draw(logits, 1.0, 0.6, g)
    freq = torch.bincount(tokens, minlength=3).double() / 20000
    assert freq[2] == 0
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0.0], dtype=torch.float64), atol=0.015)


def test_decode_strips_eos_and_padding():
    """Row 1: 'a b' + EOS (mask 1 1 1); row 2: 'c' + EOS then a pad (mask 1 1 0)."""
    tok = build_word_tokenizer("a b c d e f".split())  # a..f are ids 4..9
    a, b, c, eos, pad = 4, 5, 6, 3, 0
    r = Rollout(
        torch.tensor([[a], [a]]),
        torch.ones(2, 1, dtype=torch.long),
        torch.tensor([[a, b, eos], [c, eos, pad]]),
        torch.tensor([[1, 1, 1], [1, 1, 0]]),
        torch.zeros(2, 3),
        torch.tensor([True, True]),
        1.0,
    )
    assert decode_responses(tok, r) == ["a b", "c"]


def test_a_banned_token_is_never_drawn_and_the_rest_is_renormalised():
    """p = (0.5, 0.2, 0.2, 0.1), token 0 banned. Masking its logit to −inf leaves softmax over tokens 1..3
    = p_i / (1 − p_0) = (0.2, 0.2, 0.1) / 0.5 = (0.4, 0.4, 0.2). Exactly: in id order the CDF is
    (0, 0.4, 0.8, 1.0), and each row's token is the first whose CDF exceeds its
    uniform u, the u that a generator of the same seed yields (one float64 per row). In frequency: 20000
    draws land within 0.015 of (0, 0.4, 0.4, 0.2) (standard error ≤ 0.0035). The recorded log-prob stays
    log p (the model's, unrenormalised: what score_responses recomputes), as with top-p."""
    p = torch.tensor([0.5, 0.2, 0.2, 0.1])
    logits = torch.log(p)[None].expand(20000, 4)
    tokens, logps = _draw(logits, 1.0, 1.0, torch.Generator().manual_seed(4), banned=torch.tensor([0]))
    u = torch.rand(20000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    expected = torch.where(u < 0.4, 1, torch.where(u < 0.8, 2, 3))
    assert torch.equal(tokens, expected)
    freq = torch.bincount(tokens, minlength=4).double() / 20000
    assert freq[0] == 0
    assert torch.allclose(freq, torch.tensor([0.0, 0.4, 0.4, 0.2], dtype=torch.float64), atol=0.015)
    assert torch.allclose(logps, torch.log(p)[tokens], atol=1e-6)


def test_without_top_p_the_cdf_runs_in_id_order_and_skips_a_banned_token_in_the_middle():
    """p = (0.1, 0.6, 0.3), top_p 1: the CDF in id order is (0.1, 0.7, 1.0), so a row's token is 0 when its
    uniform u < 0.1, 1 when u < 0.7, else 2 (u: the generator's float64 per row, scaled by the total mass
    1). With token 1 banned the draw's distribution is (0.1, 0, 0.3) / 0.4 = (0.25, 0, 0.75), CDF
    (0.25, 0.25, 1.0): token 0 when u < 0.25, else 2, never the banned 1 between them."""
    p = torch.tensor([0.1, 0.6, 0.3])
    logits = torch.log(p)[None].expand(5000, 3)
    tokens, _ = _draw(logits, 1.0, 1.0, torch.Generator().manual_seed(7))
    u = torch.rand(5000, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(tokens, torch.where(u < 0.1, 0, torch.where(u < 0.7, 1, 2)))
    tokens, _ = _draw(logits, 1.0, 1.0, torch.Generator().manual_seed(7), banned=torch.tensor([1]))
    assert torch.equal(tokens, torch.where(u < 0.25, 0, 2))


def test_banning_the_most_likely_token_makes_greedy_take_the_next():
    """Greedy (T = 0) with logits (3, 1, 2): argmax 0; with 0 banned, argmax over {1, 2} is 2, recorded at
    log softmax(3, 1, 2)[2] = 2 − log(e³ + e + e²)."""
    logits = torch.tensor([[3.0, 1.0, 2.0]])
    token, logp = _draw(logits, 0.0, 1.0, None, banned=torch.tensor([0]))
    assert token.tolist() == [2]
    assert logp.item() == pytest.approx(2 - math.log(math.e**3 + math.e + math.e**2), abs=1e-6)


def test_sample_never_emits_banned_tokens(model):
    """At temperature 3 the tiny model's 16 tokens are all likely; banning half of them (not EOS) leaves
    none of them in any row, and the recorded log-probs are still the model's own (score_responses)."""
    banned = [1, 2, 4, 5, 6, 7, 8, 9]
    r = _sample(model, PROMPTS * 8, temperature=3.0, max_new_tokens=10, banned_token_ids=banned)
    drawn = r.response_ids[r.response_mask.bool()]
    assert drawn.numel() > 0 and not torch.isin(drawn, torch.tensor(banned)).any()
    assert torch.allclose(score_responses(model, r), r.logprobs, atol=1e-5)
    free = _sample(model, PROMPTS * 8, temperature=3.0, max_new_tokens=10)  # without the ban they do occur
    assert torch.isin(free.response_ids[free.response_mask.bool()], torch.tensor(banned)).any()


@pytest.mark.parametrize("banned", [[16], [-1], list(range(16))])
def test_banned_ids_outside_the_vocabulary_or_all_of_it_are_refused(model, banned):
    with pytest.raises(ValueError, match="banned_token_ids"):
        _sample(model, PROMPTS, banned_token_ids=banned)


def test_a_lora_model_samples_with_merged_adapters_and_keeps_its_base_weights_bit_for_bit():
    """With adapters whose B is nonzero (so they change the outputs), `sample` merges them into the base
    weights while it decodes: its log-probs still match the unmerged peft model's own forward pass over each
    row (score_responses, to float rounding), the sampled rows are not those of the base model alone, and
    afterwards every base weight is bit-identical to its value before, also when sampling raised."""
    from tether.config import LoRAConfig
    from tether.lora import add_adapters

    torch.manual_seed(0)
    peft_model = add_adapters(tiny_model(seed=3), LoRAConfig(r=4, alpha=8)).eval()
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    r = _sample(peft_model, PROMPTS * 4, temperature=1.0, seed=5)
    assert torch.allclose(score_responses(peft_model, r), r.logprobs, atol=1e-5)
    with peft_model.disable_adapter():
        base_lp = score_responses(peft_model, r)
    assert (base_lp - r.logprobs).abs().max() > 1e-2  # the adapters were in the sampled distribution
    for k, v in peft_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="banned_token_ids"):
        _sample(peft_model, PROMPTS, banned_token_ids=[10_000])
    for k, v in peft_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(getattr(m, "merged", False) for m in peft_model.modules())
