"""`rollout.engine: vllm`: sample the RL trainers' responses with vLLM instead of `tether.rollout.sample`.

    check_engine(cfg.rollout.engine)              # at start-up: a one-line TetherError when vLLM cannot run
    sampler = VLLMSampler(policy_dir, cfg.rollout, dtype)
    sampler.sync(policy)                          # copy the policy's current weights into the engine
    rollout = sampler.sample(prompt_ids_lists, eos_id, pad_id, seed, device)

Each process builds its own engine on its own GPU (what `accelerate launch` gives it) from the policy's
directory and receives the trained weights by `load_weights` before every iteration's sampling, so vLLM
always samples from the current policy. The result is a `tether.rollout.Rollout` like the HF path's (left-
padded prompts, right-padded responses, EOS kept); everything after sampling (scoring, log-probs, the update)
is unchanged, and the old log-probs are recomputed by the trainer's own forward pass, so the PPO ratio
does not depend on vLLM's numerics.

Untested here: the machine that wrote it has neither vLLM nor a GPU; only `check_engine` is exercised by
the test suite. The weight copy uses `LLM.apply_model` (vLLM ≥ 0.8 with the in-process engine,
VLLM_ENABLE_V1_MULTIPROCESSING=0); an older or newer vLLM may name it differently.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from tether.errors import TetherError
from tether.rollout import Rollout


def check_engine(engine: str) -> None:
    """TetherError (one line) when `engine` cannot run here; 'hf' always can."""
    if engine == "hf":
        return
    if engine != "vllm":
        raise TetherError(f"rollout.engine must be 'hf' or 'vllm', got {engine!r}")
    if importlib.util.find_spec("vllm") is None:
        raise TetherError("rollout.engine=vllm needs the vllm package (pip install vllm); "
                          "use rollout.engine=hf to sample with the policy itself")
    if not torch.cuda.is_available():
        raise TetherError("rollout.engine=vllm needs a CUDA GPU and none is visible; use rollout.engine=hf")


class VLLMSampler:
    """One vLLM engine on this process's GPU, loaded from the policy's directory."""

    def __init__(self, model_dir: str, rollout_cfg, dtype: str = "auto", gpu_memory: float = 0.3):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process
        from vllm import LLM

        self.cfg = rollout_cfg
        self.llm = LLM(model=model_dir, dtype=dtype, gpu_memory_utilization=gpu_memory,
                       device=f"cuda:{torch.cuda.current_device()}", enforce_eager=True)

    @torch.no_grad()
    def sync(self, policy: torch.nn.Module) -> None:
        """Copy `policy`'s weights (an unwrapped HF causal LM) into the engine."""
        weights = [(name, p.detach()) for name, p in policy.state_dict().items()]
        self.llm.apply_model(lambda model: model.load_weights(weights))

    def sample(self, prompts: list[list[int]], eos_id: int, pad_id: int, seed: int, device="cpu") -> Rollout:
        """One response per prompt (token-id lists) → Rollout (on `device`) with the tokens' log-probs."""
        from vllm import SamplingParams

        c = self.cfg
        params = SamplingParams(n=1, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_new_tokens,
                                seed=seed, logprobs=0, stop_token_ids=[eos_id], skip_special_tokens=False)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        B, P = len(prompts), max(len(p) for p in prompts)
        R = max(1, max(len(o.outputs[0].token_ids) for o in outs))
        prompt_ids, prompt_mask = torch.full((B, P), pad_id), torch.zeros(B, P, dtype=torch.long)
        ids, mask = torch.full((B, R), pad_id), torch.zeros(B, R, dtype=torch.long)
        logprobs, ended = torch.zeros(B, R), torch.zeros(B, dtype=torch.bool)
        for b, (p, o) in enumerate(zip(prompts, outs, strict=True)):
            prompt_ids[b, P - len(p) :], prompt_mask[b, P - len(p) :] = torch.tensor(p), 1
            toks = list(o.outputs[0].token_ids)
            ids[b, : len(toks)], mask[b, : len(toks)] = torch.tensor(toks, dtype=torch.long), 1
            for t, (tok, lp) in enumerate(zip(toks, o.outputs[0].logprobs or [], strict=False)):
                logprobs[b, t] = lp[tok].logprob
            ended[b] = bool(toks) and toks[-1] == eos_id
        tensors = [x.to(device) for x in (prompt_ids, prompt_mask, ids, mask, logprobs, ended)]
        return Rollout(*tensors, c.temperature)
