"""Packed (padding-free) forward passes, tether.packing: the same values and gradients as the padded batch,
to float rounding, in every stage that uses them.

Each stage's test computes its loss twice on the same batch, once as it runs (packed, since the rows differ
in length) and once inside `padded()`, and compares the losses and every parameter's gradient. The rows are
built so that packing saves rows (asserted), otherwise the two runs would be the same code.
"""

import dataclasses
from pathlib import Path

import pytest
import torch
from plumbing_helpers import tiny_model, tiny_tokenizer
from ppo_helpers import ppo_config, ppo_run, ppo_setup

from tether.config import DPOConfig, load_config
from tether.data import collate_completions, pad, position_ids
from tether.models import build_tiny_llama
from tether.packing import bin_length, bins, pack, padded, run_packed, shared_prefixes, supports_packing
from tether.reward_model import create_reward_model, token_scores
from tether.rollout import logits_at
from tether.trainers.dpo import DPOTask
from tether.trainers.ppo import make_experience, minibatch_loss
from tether.trainers.rm import RMTask
from tether.trainers.sft import SFTTask

PAD = 0
PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [4], [6, 7]]
COMPLETIONS = [[14, 15], [4, 6, 11, 15, 3], [12], [5, 3], [9, 9, 9, 3]]


def test_bins_first_fit_decreasing():
    """Lengths (5, 9, 3, 2) into bins of 9, longest first: 9 → bin 0 (full); 5 → bin 1 (4 left);
    3 → bin 1 (1 left); 2 → no room in either, bin 2."""
    assert bins([5, 9, 3, 2], 9) == [[1], [0, 2], [3]]
    assert bins([4, 4], 4) == [[0], [1]]
    assert bins([], 3) == []


def test_bin_length_by_hand():
    """Chains of 300, 250, 200 and 150 tokens, the least length 300; candidates 300 + 18k (300 // 16 = 18) up
    to 600, cost = positions × (1 + C / 3073). C = 300: one bin each, 1200 × 1.0976 = 1317.1. C = 444: 300
    (144 left), 250 (194 left), 200 a bin of its own, 150 to the second: 3 × 444 = 1332 positions, worse.
    C = 462: 300 (162 left), 250 (212 left), 200 beside 250 (12 left), 150 beside 300: 2 × 462 = 924 × 1.1503
    = 1062.9, and every longer candidate still needs 2 bins (one would be 900), so costs more: 462. Two
    chains of 256 stay apart: 512 × 1.0833 = 554.7 in two bins against 512 × 1.1666 = 597.3 in one."""
    assert bin_length([300, 250, 200, 150], 300) == 462
    assert bin_length([256, 256], 256) == 256
    assert bin_length([5], 5) == 5


def test_pack_layout_by_hand():
    """Rows of 2, 3 and 1 real tokens (right, left and right padded) in bins of 3: the row of 3 alone, then
    2 + 1 end to end (positions 0 1 0; the third position sees only itself). A value per packed position
    goes back to its padded place, 0 at padding."""
    ids = torch.tensor([[11, 12, 0, 0], [0, 22, 23, 24], [15, 0, 0, 0]])
    attn = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]])  # row 1 left-padded
    p = pack(ids, attn)
    # lengths 2, 3, 1, capacity 3: 3 → bin 0; 2 → bin 1; 1 → bin 1 (2 + 1 = 3)
    assert p.input_ids.tolist() == [[22, 23, 24], [11, 12, 15]]
    assert p.position_ids.tolist() == [[0, 1, 2], [0, 1, 0]]
    m = p.attention_mask[:, 0].int().tolist()
    assert m[1] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert m[0] == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    x = torch.arange(6.0).view(2, 3)  # a value per packed position
    assert p.unpack(x).tolist() == [[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]]
    # 1 and 3 tokens: bins of 3 would save nothing (2 × 3 = 6 positions); one bin of 4 (bin_length) holds both
    two = pack(ids[:2, 1:], attn[:2, 1:])
    assert two.input_ids.tolist() == [[22, 23, 24, 12]] and two.position_ids.tolist() == [[0, 1, 2, 0]]
    assert pack(ids[:1, :2], attn[:1, :2]) is None  # one full row: nothing to save


def test_shared_prefixes_by_hand():
    """Rows (index: tokens) 0: 1 2 3, 1: 1 2 4, 2: 1 2 3 5, 3: 9, longest T = 4, so a link needs
    k ≥ max(1, ⌈4/8⌉) = 1. Sorted: row 0 (1 2 3), row 2 (1 2 3 5), row 1 (1 2 4), row 3 (9): row 2 borrows
    3 tokens from row 0, row 1 two from row 2 (common prefix 1 2), row 3 nothing. With room for 5 own
    tokens per chain: row 0 (3) + row 2's 1 = 4, row 1's own 1 would make 5: taken; at 4 it is not."""
    rows = [[1, 2, 3], [1, 2, 4], [1, 2, 3, 5], [9]]
    assert shared_prefixes(rows, 100) == [(-1, 0), (2, 2), (0, 3), (-1, 0)]
    assert shared_prefixes(rows, 5) == [(-1, 0), (2, 2), (0, 3), (-1, 0)]
    assert shared_prefixes(rows, 4) == [(-1, 0), (-1, 0), (0, 3), (-1, 0)]
    # T = 17 → k ≥ ⌈17/8⌉ = 3: a common prefix of 2 is not shared, of 3 is
    long = [7] * 17
    assert shared_prefixes([[1, 2, 8], [1, 2, 9], long], 100) == [(-1, 0), (-1, 0), (-1, 0)]
    assert shared_prefixes([[1, 2, 3, 8], [1, 2, 3, 9], long], 100) == [(-1, 0), (0, 3), (-1, 0)]


def test_pack_shares_a_pairs_prompt_by_hand():
    """A preference batch (chosen rows, then rejected rows): prompt 5 6 7 with answers 14 15 / 3, prompt 8
    with 4 6 11 15 3 / 4. Rows 0 and 2 share 5 6 7; row 3 (8 4) is all of row 1's beginning, so it has no
    token of its own. Sorted, row 2 (5 6 7 3) comes before row 0 (5 6 7 14 15), so the chain of rows 2 and 0
    is 5 6 7 3 | 14 15 (6 tokens, row 0's own two at positions 3 4), and the chain of rows 1 and 3 is row 1's
    6 tokens. Bins of 6 (the longest row): one chain each, 12 positions where the padded batch has 24 and
    the rows 17 real tokens. Row 0's 14 sees 5 6 7 and itself, not row 2's 3."""
    b = collate_completions([[5, 6, 7], [8]] * 2, [[14, 15], [4, 6, 11, 15, 3], [3], [4]], PAD)
    p = pack(b["input_ids"], b["attention_mask"])
    assert p.input_ids.tolist() == [[5, 6, 7, 3, 14, 15], [8, 4, 6, 11, 15, 3]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 3, 4], [0, 1, 2, 3, 4, 5]]
    m = p.attention_mask[:, 0].int().tolist()
    assert m[0][3] == [1, 1, 1, 1, 0, 0]  # row 2's 3
    assert m[0][4] == [1, 1, 1, 0, 1, 0]  # row 0's 14: its prompt and itself
    assert m[0][5] == [1, 1, 1, 0, 1, 1]
    # packed flat index of each real token, rows in order: row 0 = 0 1 2 4 5, row 1 = 6..11, row 2 = 0 1 2 3,
    # row 3 = 6 7 (row 1's first two)
    assert p.to_packed.tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2, 3, 6, 7]
    x = torch.arange(12.0).view(2, 6)
    assert p.unpack(x)[3].tolist() == [6.0, 7.0, 0.0, 0.0, 0.0, 0.0]


def test_shared_prefix_logits_and_gradients_equal_each_row_alone():
    """Left-padded rows as RL rollouts make them (a GRPO group: one prompt, four responses, one of them
    the same as another, one ending inside another) plus two unrelated rows: the logits at every real
    position, and the gradient of a sum of selected log-softmax values, equal those of each row run alone."""
    model = tiny_model(seed=5).train()
    prompt = [5, 6, 7, 8, 9, 10]
    rows = [prompt + [11, 12, 3], prompt + [13], prompt + [11, 12, 3], prompt + [11], [4, 4, 5], [14, 15]]
    ids, attn = pad(rows, PAD, side="left")
    p = pack(ids, attn)
    assert p is not None and p.input_ids.numel() < attn.sum()  # fewer positions than real tokens: shared
    select = attn.bool().clone()
    select[:, 0] = False
    weights = torch.randn(int(select.sum()), 16, generator=torch.Generator().manual_seed(0))

    def loss_packed():
        return (logits_at(model, ids, attn, select).log_softmax(-1) * weights).sum()

    def loss_alone():
        out = []
        for b, r in enumerate(rows):
            logits = model(input_ids=torch.tensor([r]), position_ids=torch.arange(len(r))[None]).logits[0]
            out.append(logits[select[b][attn[b].bool()]])
        return (torch.cat(out).log_softmax(-1) * weights).sum()

    _assert_same(_both(lambda m: loss_packed(), model)[0], _both(lambda m: loss_alone(), model)[0])


def test_packed_logits_equal_each_row_alone():
    """Every real position's logits equal those of the row run alone (no padding at all), left- and
    right-padded rows mixed; packing saved rows."""
    model = tiny_model(seed=3).eval()
    rows = [[5, 6, 7, 8, 9], [4, 5], [10, 11, 12], [13], [7, 7, 7, 7]]
    ids, attn = pad(rows, PAD, side="left")
    ids[1], attn[1] = torch.tensor([4, 5, 0, 0, 0]), torch.tensor([1, 1, 0, 0, 0])  # one right-padded row
    assert pack(ids, attn).input_ids.shape[0] < len(rows)
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([r]), position_ids=torch.arange(len(r))[None]).logits[0]
                 for r in rows]
        got = run_packed(model, ids, attn, lambda i, a, p, k: model(input_ids=i, attention_mask=a,
                                                                       position_ids=p).logits)
    for b in range(len(rows)):
        assert torch.allclose(got[b][attn[b].bool()], alone[b], atol=1e-5)
    assert (got[~attn.bool()] == 0).all()


def test_models_without_sdpa_run_padded():
    """Eager attention reads a boolean 4-D mask as additive numbers: such a model is not packed."""
    sdpa = build_tiny_llama(16, hidden_size=16, num_heads=2)
    eager = build_tiny_llama(16, hidden_size=16, num_heads=2)
    eager.config._attn_implementation = "eager"
    assert supports_packing(sdpa) and not supports_packing(eager)


def _both(fn, model):
    """(loss, grads) of fn(model) run packed, then padded."""
    out = []
    for ctx in (torch.enable_grad, padded):
        model.zero_grad()
        with ctx():
            loss = fn(model)
        loss.backward()
        out.append((float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    return out


def _assert_same(packed_run, padded_run, atol=1e-5):
    (l1, g1), (l2, g2) = packed_run, padded_run
    assert l1 == pytest.approx(l2, abs=atol)
    assert len(g1) == len(g2) > 0
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=atol)


@pytest.fixture
def pairs_batch():
    # chosen rows of 5 and 6 tokens, rejected of 4 and 2 (bins of 6: the 4 and the 2 share one)
    batch = collate_completions(PROMPTS[:2] * 2, [COMPLETIONS[0], COMPLETIONS[1], [3], [4]], PAD)
    p = pack(batch["input_ids"], batch["attention_mask"])
    assert p is not None and p.input_ids.numel() < batch["attention_mask"].sum()  # the prompts are shared
    return batch


def test_sft_loss_and_gradients_packed_equal_padded():
    # rows of 5, 6, 6, 3, 6 and 2 tokens in bins of 6: the 3 and the 2 share one
    batch = collate_completions([*PROMPTS, [4]], [*COMPLETIONS, [3]], PAD)
    assert pack(batch["input_ids"], batch["attention_mask"]) is not None
    task = SFTTask(PAD, micro_batch_size=6)
    model = tiny_model(seed=1).train()
    _assert_same(*_both(lambda m: task.loss(m, batch, num_units=10.0)[0], model))


def test_reward_model_loss_and_gradients_packed_equal_padded(pairs_batch):
    model, _ = create_reward_model_from_tiny()
    batch = {**pairs_batch, "label": torch.ones(2), "margin": torch.zeros(2)}
    task = RMTask(PAD, micro_batch_size=2, center_coef=0.01)
    _assert_same(*_both(lambda m: task.loss(m, batch, num_units=2.0)[0], model))


def create_reward_model_from_tiny():
    """A reward model with the tiny Llama's trunk and a random head (so the scores are not all 0)."""
    import tempfile

    from plumbing_helpers import write_model_dir

    d = write_model_dir(Path(tempfile.mkdtemp()) / "sft", seed=2)
    model, tok = create_reward_model(str(d), None, "float32", False)
    torch.nn.init.normal_(model.score.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    return model.train(), tok


def test_dpo_loss_and_gradients_packed_equal_padded(pairs_batch):
    cfg = load_config(DPOConfig, None, ["policy=p", "data.train=d.jsonl"])
    task = DPOTask(cfg, tiny_tokenizer())
    batch = {**pairs_batch, "label": torch.ones(2), "ref_chosen": torch.tensor([-3.0, -2.0]),
             "ref_rejected": torch.tensor([-2.5, -4.0])}
    model = tiny_model(seed=4).train()
    _assert_same(*_both(lambda m: task.loss(m, batch, num_units=2.0)[0], model))


def test_rm_token_scores_packed_equal_padded():
    model, _ = create_reward_model_from_tiny()
    ids, attn = pad([[5, 6, 7, 8], [9], [10, 11], [12, 13, 14, 15]], PAD)
    assert pack(ids, attn) is not None
    with torch.no_grad():
        got = token_scores(model, ids, attn)
        with padded():
            want = token_scores(model, ids, attn)
    m = attn.bool()
    assert torch.allclose(got[m], want[m], atol=1e-5)


def test_ppo_minibatch_loss_and_gradients_packed_equal_padded(tmp_path):
    """Policy and critic of a PPO run on one rollout of responses of different lengths (left-padded prompts,
    right-padded responses): the minibatch loss, the policy's and the critic's gradients, and the scores
    at sampling time. Responses 1-3 are cut to one token (as if EOS came first), so rows of 7 and of 3
    tokens share bins."""
    setup = ppo_setup(tmp_path)
    trainer = ppo_run(ppo_config(setup, "kl.estimator=token_kl"), tmp_path / "run")
    rollout = trainer.rollout(trainer.prompt_batch(0), seed=0)
    cut = rollout.response_mask.clone()
    cut[1:4, 1:] = 0
    rollout = dataclasses.replace(rollout, response_mask=cut)
    assert pack(rollout.input_ids[:8], rollout.attention_mask[:8]) is not None
    with padded():
        exp = make_experience(trainer.policy, trainer.ref, trainer.critic, rollout, torch.ones(16), 0.1,
                              trainer.cfg)
    part = exp.rows(slice(0, 8)).trimmed()
    runs = []
    for ctx in (torch.enable_grad, padded):
        trainer.policy.zero_grad()
        trainer.critic.zero_grad()
        with ctx():
            loss, _ = minibatch_loss(trainer.policy, trainer.critic, trainer.ref, trainer.cfg.ppo, part)
        loss.backward()
        grads = [p.grad.clone() for m in (trainer.policy, trainer.critic) for p in m.parameters()
                 if p.grad is not None]
        runs.append((float(loss.detach()), grads))
    _assert_same(*runs)
    with torch.no_grad():
        packed_exp = make_experience(trainer.policy, trainer.ref, trainer.critic, rollout, torch.ones(16),
                                     0.1, trainer.cfg)
    m = rollout.response_mask.bool()
    for name in ("old_logprobs", "ref_logprobs", "old_values", "kl"):
        assert torch.allclose(getattr(packed_exp, name)[m], getattr(exp, name)[m], atol=1e-5), name


def test_logits_at_select_order_survives_packing():
    """logits_at lists the selected positions in the padded batch's row-major order even when packing
    puts a later row's tokens before an earlier row's."""
    model = tiny_model(seed=6).eval()
    ids, attn = pad([[5, 6], [7, 8, 9, 10], [11, 12]], PAD)
    p = pack(ids, attn)
    assert p is not None and p.to_packed[0] > p.to_packed[2]  # row 0 is packed after row 1
    select = attn.bool().clone()
    with torch.no_grad():
        got = logits_at(model, ids, attn, select)
        full = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits
    assert torch.allclose(got, full[select], atol=1e-5)
