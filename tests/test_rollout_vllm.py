"""`tether.rollout_vllm.VLLMSampler`: how it calls the vLLM engine, checked against a recording stand-in of
vLLM's offline API (`vllm.LLM`, `vllm.SamplingParams`; names and keywords as in vLLM 0.33.0), and, where a
CUDA GPU and the vllm package exist, against the real engine (`gpu` marker; skipped elsewhere)."""

from __future__ import annotations

import importlib.util
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from plumbing_helpers import tiny_tokenizer

from tether.config import PPORolloutConfig
from tether.errors import TetherError
from tether.rollout_vllm import VLLMSampler

EOS, PAD = 3, 0

# Keywords of vLLM 0.33.0's `LLM(...)` (its own parameters and the EngineArgs fields it forwards) that the
# sampler may pass. `device` is not one of them: EngineArgs dropped it, so `LLM(device=...)` is a TypeError.
LLM_KEYWORDS = {"model", "dtype", "seed", "gpu_memory_utilization", "enforce_eager", "tensor_parallel_size",
                "distributed_executor_backend", "max_model_len", "enable_prefix_caching", "logprobs_mode"}
# Fields of vLLM 0.33.0's SamplingParams that the sampler may set.
SAMPLING_FIELDS = {"n", "temperature", "top_p", "top_k", "max_tokens", "seed", "logprobs", "stop_token_ids",
                   "skip_special_tokens", "detokenize", "ignore_eos"}


def fake_vllm(responses):
    """A `vllm` module whose LLM and SamplingParams record how they are used. Every call lands in
    `module.calls` in order: ("LLM", kwargs), ("load", names), ("reset",), ("generate", prompts, params).
    Row b of every generate call answers `responses[b]` (token ids), token t with log-prob -(t + 1) / 10."""
    calls = []

    class SamplingParams:
        def __init__(self, **kwargs):
            unknown = set(kwargs) - SAMPLING_FIELDS
            if unknown:
                raise TypeError(f"SamplingParams got unexpected keywords {sorted(unknown)}")
            self.kwargs = kwargs

    class Model:
        def load_weights(self, weights):
            names = [name for name, _ in weights]
            calls.append(("load", names))
            return set(names)

    class LLM:
        def __init__(self, model, **kwargs):
            unknown = set(kwargs) - LLM_KEYWORDS
            if unknown:  # what EngineArgs(**kwargs) does with a keyword it does not have
                raise TypeError(f"EngineArgs.__init__() got unexpected keywords {sorted(unknown)}")
            calls.append(("LLM", {"model": model, **kwargs}))

        def apply_model(self, func):
            return [func(Model())]

        def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
            calls.append(("reset",))
            return module.reset_ok

        def generate(self, prompts, sampling_params=None, *, use_tqdm=True, **_):
            calls.append(("generate", prompts, sampling_params))
            outs = []
            for b in range(len(prompts)):
                toks = responses[b]
                lps = [{tok: SimpleNamespace(logprob=-(t + 1) / 10)} for t, tok in enumerate(toks)]
                outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(toks), logprobs=lps)]))
            return outs

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams, module.calls, module.reset_ok = LLM, SamplingParams, calls, True
    return module


@pytest.fixture
def engine(monkeypatch):
    """Install a fake vllm (default responses: one per row, 6 rows) and return a function that swaps them."""
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)  # the sampler sets it; undo after
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # a GPU as far as device names go

    def install(responses=((4, EOS),) * 6):
        module = fake_vllm([list(r) for r in responses])
        monkeypatch.setitem(sys.modules, "vllm", module)
        return module

    return install


def rollout_cfg(**kw) -> PPORolloutConfig:
    return PPORolloutConfig(**{"max_new_tokens": 4, "temperature": 1.0, "top_p": 1.0, **kw})


def tiny_policy() -> torch.nn.Module:
    return torch.nn.Linear(2, 3)  # state_dict names: weight, bias


def test_the_engine_is_built_with_keywords_vllm_accepts(engine):
    """vLLM 0.33 has no `device` engine argument (the old code passed one: TypeError at the first rollout);
    with one process the engine takes its defaults (the in-process single-GPU executor)."""
    vllm = engine()
    VLLMSampler("/models/p", rollout_cfg(), "bfloat16")
    (name, kwargs), = vllm.calls
    assert name == "LLM" and "device" not in kwargs
    assert kwargs["model"] == "/models/p" and kwargs["dtype"] == "bfloat16"
    assert "distributed_executor_backend" not in kwargs


def test_with_several_processes_each_engine_is_one_of_an_external_launch(engine, monkeypatch):
    """Under `accelerate launch` (torch.distributed initialised, world of 2), vLLM's external-launcher
    executor makes one worker per process on the GPU of its LOCAL_RANK, inside the launcher's process group;
    the default executor would put every process's engine on GPU 0."""
    vllm = engine()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 2)
    VLLMSampler("/models/p", rollout_cfg(), "auto")
    (_, kwargs), = vllm.calls
    assert kwargs["distributed_executor_backend"] == "external_launcher" and "device" not in kwargs


def seeds_of(vllm, call: int = -1) -> list[int]:
    generates = [c for c in vllm.calls if c[0] == "generate"]
    params = generates[call][2]
    assert isinstance(params, list), "one SamplingParams for the whole batch"
    return [p.kwargs["seed"] for p in params]


def test_each_row_has_its_own_seed(engine):
    """Two prompts × G=3 copies (as GRPO/RLOO lay them out: copies contiguous). One shared seed would give
    the three copies the same noise, so the same answer and a zero group advantage; each row needs its own
    seed, and the six seeds must be distinct."""
    vllm = engine()
    sampler = VLLMSampler("/models/p", rollout_cfg(), "auto")
    prompts = [[5, 6]] * 3 + [[7]] * 3
    sampler.sample(prompts, EOS, PAD, seed=1234)
    (_, got_prompts, params), = [c for c in vllm.calls if c[0] == "generate"]
    assert got_prompts == [{"prompt_token_ids": p} for p in prompts]
    assert isinstance(params, list) and len(params) == len(prompts)
    seeds = [p.kwargs["seed"] for p in params]
    assert len(set(seeds)) == 6, seeds
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)  # what torch.Generator.manual_seed takes
    first = {k: params[0].kwargs[k] for k in ("n", "max_tokens", "stop_token_ids", "temperature", "top_p")}
    assert first == {"n": 1, "max_tokens": 4, "stop_token_ids": [EOS], "temperature": 1.0, "top_p": 1.0}


def test_row_seeds_follow_the_iteration_seed(engine):
    """The trainer hands `sample` a seed made from (run seed, iteration, process): the same seed again (a
    resumed run at the same iteration, or a new sampler) draws the same row seeds; the next iteration's
    seed draws none of the same ones."""
    vllm = engine()
    prompts = [[5, 6]] * 4
    VLLMSampler("/models/p", rollout_cfg(), "auto").sample(prompts, EOS, PAD, seed=40)
    VLLMSampler("/models/p", rollout_cfg(), "auto").sample(prompts, EOS, PAD, seed=40)  # "resumed"
    VLLMSampler("/models/p", rollout_cfg(), "auto").sample(prompts, EOS, PAD, seed=44)  # next iteration
    first, again, later = seeds_of(vllm, 0), seeds_of(vllm, 1), seeds_of(vllm, 2)
    assert first == again
    assert not set(first) & set(later), (first, later)


def test_the_prefix_cache_is_reset_after_every_weight_load(engine):
    """Two iterations of sync-then-sample: the engine must forget KV computed with the old weights after
    each load and before the next generate, so the order of engine calls is exactly
    LLM, load, reset, generate, load, reset, generate; every weight of the policy is loaded by name."""
    vllm = engine()
    sampler = VLLMSampler("/models/p", rollout_cfg(), "auto")
    for seed in (0, 4):
        sampler.sync(tiny_policy())
        sampler.sample([[5]], EOS, PAD, seed=seed)
    assert [c[0] for c in vllm.calls] == ["LLM", "load", "reset", "generate", "load", "reset", "generate"]
    assert vllm.calls[1][1] == ["weight", "bias"]


def test_a_prefix_cache_that_was_not_reset_stops_the_run(engine):
    """vLLM's reset_prefix_cache returns False when it could not reset (requests still running); sampling
    on would reuse stale KV, so the sync says so in one line."""
    vllm = engine()
    vllm.reset_ok = False
    sampler = VLLMSampler("/models/p", rollout_cfg(), "auto")
    with pytest.raises(TetherError, match="prefix cache"):
        sampler.sync(tiny_policy())


def test_the_engine_tokens_come_back_as_a_rollout(engine):
    """Prompts [5, 6] and [7] (P = 2); the engine answers [8, 9, EOS] and [10] (cut at max_new_tokens, no
    EOS), R = 3. By hand: prompts left-padded [[5, 6], [PAD, 7]] with masks [[1, 1], [0, 1]]; responses
    right-padded [[8, 9, 3], [10, PAD, PAD]] with masks [[1, 1, 1], [1, 0, 0]]; log-probs -(t + 1) / 10 on
    the response tokens, 0 on padding: [[-0.1, -0.2, -0.3], [-0.1, 0, 0]]; ended [True, False]."""
    engine(responses=[[8, 9, EOS], [10]])
    sampler = VLLMSampler("/models/p", rollout_cfg(temperature=0.7), "auto")
    r = sampler.sample([[5, 6], [7]], EOS, PAD, seed=1)
    assert r.prompt_ids.tolist() == [[5, 6], [PAD, 7]]
    assert r.prompt_mask.tolist() == [[1, 1], [0, 1]]
    assert r.response_ids.tolist() == [[8, 9, EOS], [10, PAD, PAD]]
    assert r.response_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    torch.testing.assert_close(r.logprobs, torch.tensor([[-0.1, -0.2, -0.3], [-0.1, 0.0, 0.0]]))
    assert r.ended.tolist() == [True, False]
    assert r.temperature == 0.7
    assert r.response_ids.dtype == r.prompt_ids.dtype == torch.long


# ------------------------------------------------------------------------------ the real engine (GPU)

needs_vllm_and_gpu = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
    reason="needs the vllm package (pip install 'tether[vllm]') and a CUDA GPU",
)


@pytest.mark.gpu
@needs_vllm_and_gpu
def test_the_real_engine_samples_the_synced_weights(tmp_path):
    """A tiny Llama (head size 64, which vLLM's attention kernels take). Greedy (temperature 0) answers
    from vLLM must equal tether's own greedy sampler on the same weights: first the weights the engine
    loaded from disk, then, after `sync`, another model's weights on the same prompts, which also shows the
    prefix cache did not serve KV of the old weights. At temperature 1 the G copies of a prompt differ and
    the same seed draws the same tokens again."""
    from tether.models import build_tiny_llama
    from tether.rollout import sample

    vocab = 16
    a, b = (build_tiny_llama(vocab, hidden_size=128, num_heads=2, seed=s).cuda() for s in (0, 1))
    a.save_pretrained(tmp_path / "policy")
    tiny_tokenizer().save_pretrained(tmp_path / "policy")
    prompts = [[2, 5, 6], [2, 7]]

    def hf_greedy(model):
        P = max(len(p) for p in prompts)
        ids = torch.tensor([[PAD] * (P - len(p)) + p for p in prompts]).cuda()
        mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts]).cuda()
        r = sample(model, ids, mask, max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD, temperature=0.0)
        return [row[: int(m.sum())] for row, m in zip(r.response_ids.tolist(), r.response_mask, strict=True)]

    def vllm_tokens(r):
        return [row[: int(m.sum())] for row, m in zip(r.response_ids.tolist(), r.response_mask, strict=True)]

    sampler = VLLMSampler(str(tmp_path / "policy"), rollout_cfg(max_new_tokens=6, temperature=0.0), "float32")
    assert vllm_tokens(sampler.sample(prompts, EOS, PAD, seed=0)) == hf_greedy(a)
    sampler.sync(b)
    assert hf_greedy(b) != hf_greedy(a)  # else the second check could not tell the weights apart
    assert vllm_tokens(sampler.sample(prompts, EOS, PAD, seed=0)) == hf_greedy(b)

    sampler.cfg = rollout_cfg(max_new_tokens=6, temperature=1.0)
    group = [prompts[0]] * 4
    first = vllm_tokens(sampler.sample(group, EOS, PAD, seed=7))
    assert len({tuple(t) for t in first}) > 1, first
    assert vllm_tokens(sampler.sample(group, EOS, PAD, seed=7)) == first
