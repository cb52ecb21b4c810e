"""`rollout.engine: vllm`: sample the RL trainers' responses with vLLM instead of `tether.rollout.sample`.

    check_engine(cfg.rollout.engine)              # at start-up: a one-line TetherError when vLLM cannot run
    sampler = VLLMSampler(policy_dir, cfg.rollout, dtype)
    sampler.sync(policy)                          # copy the policy's current weights into the engine
    rollout = sampler.sample(prompt_ids_lists, eos_id, pad_id, seed, device)

Each process builds its own engine on its own GPU from the policy's directory (with several processes,
vLLM's external-launcher executor: one worker per process, on the GPU of its LOCAL_RANK, inside the process
group `accelerate launch` made) and receives the trained weights by `load_weights` before every iteration's
sampling; the prefix cache is then emptied, so no prompt reuses keys and values computed with the old
weights. Every row gets its own sampling seed, derived from the iteration's seed, so the G copies of a
prompt (GRPO, RLOO) draw different answers and a resumed run draws the same ones. The result is a
`tether.rollout.Rollout` like the HF path's (left-padded prompts, right-padded responses, EOS kept);
everything after sampling (scoring, log-probs, the update) is unchanged, and the old log-probs are
recomputed by the trainer's own forward pass, so the PPO ratio does not depend on vLLM's numerics.

Written against vLLM 0.33.0's offline API (`LLM`, `SamplingParams`, `LLM.apply_model`,
`LLM.reset_prefix_cache`; `pip install 'tether[vllm]'`). The weight copy runs a function on the model
inside the engine, so the engine must live in this process: VLLM_ENABLE_V1_MULTIPROCESSING=0.
Checked here against a recording stand-in of that API only (tests/test_rollout_vllm.py); the test that
runs the real engine is marked `gpu` and needs vllm and a CUDA GPU.
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
        raise TetherError("rollout.engine=vllm needs the vllm package (pip install 'tether[vllm]'); "
                          "use rollout.engine=hf to sample with the policy itself")
    if not torch.cuda.is_available():
        raise TetherError("rollout.engine=vllm needs a CUDA GPU and none is visible; use rollout.engine=hf")


def row_seeds(seed: int, rows: int) -> list[int]:
    """One sampling seed per row from the batch's `seed`: seed·K + row mod 2^63 (what
    torch.Generator.manual_seed takes), K = 1,000,033. Distinct within a batch; for batches of fewer than K
    rows whose seeds differ by 1 to 2^40 (e.g. one process's consecutive iterations, 4 apart in
    `iteration_seed`), seed·K + row differ by less than 2^63 and by at least K − rows > 0, so no row seed
    is shared."""
    return [(seed * 1_000_033 + b) % 2**63 for b in range(rows)]


class VLLMSampler:
    """One vLLM engine on this process's GPU, loaded from the policy's directory."""

    def __init__(self, model_dir: str, rollout_cfg, dtype: str = "auto", gpu_memory: float = 0.3):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process (see the module doc)
        from vllm import LLM

        self.cfg = rollout_cfg
        launch = {}
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            launch["distributed_executor_backend"] = "external_launcher"  # GPU LOCAL_RANK, not GPU 0
        self.llm = LLM(model=model_dir, dtype=dtype, gpu_memory_utilization=gpu_memory, enforce_eager=True,
                       **launch)

    @torch.no_grad()
    def sync(self, policy: torch.nn.Module) -> None:
        """Copy `policy`'s weights (an unwrapped HF causal LM) into the engine, then empty its prefix cache
        (its keys and values were computed with the old weights)."""
        weights = [(name, p.detach()) for name, p in policy.state_dict().items()]
        self.llm.apply_model(lambda model: model.load_weights(weights))
        if not self.llm.reset_prefix_cache():
            raise TetherError("vLLM did not reset its prefix cache after the weight copy (requests still "
                              "running?); sampling on would reuse keys and values of the old weights")

    def sample(self, prompts: list[list[int]], eos_id: int, pad_id: int, seed: int, device="cpu") -> Rollout:
        """One response per prompt (token-id lists) → Rollout (on `device`) with the tokens' log-probs.
        Row b samples with seed `row_seeds(seed, B)[b]`."""
        from vllm import SamplingParams

        c = self.cfg
        params = [SamplingParams(n=1, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_new_tokens,
                                 seed=s, logprobs=0, stop_token_ids=[eos_id], skip_special_tokens=False)
                  for s in row_seeds(seed, len(prompts))]
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
