"""Steady-state optimizer steps of tether's trainers on a real model: seconds, tokens/s, peak RSS, FLOP/s.

    python benchmarks/steps.py --model /path/to/smollm2-135m-instruct --stages dpo,dpo-cached --steps 3

Each stage runs in its own child process (so its peak RSS is its own) and times `--steps` optimizer steps
after `--warmup` untimed ones. A step is what the trainer really runs: the task's loss
(`SFTTask`/`RMTask`/`DPOTask`.loss; for GRPO and PPO the scoring forward passes of
`make_group_experience`/`make_experience` and then one optimizer step of `update_epochs`), backward and
`Loop.optimizer_step` (AdamW, clipping). GRPO and PPO steps exclude sampling: their "rollouts" are fixed
token sequences (prompt half, response half of each row), so the step's shape does not depend on what the
model happens to generate, and they carry π_old's log-probs as the sampler records them (`rl_steps`).

Data: HH-RLHF pairs, either the raw file (`chosen`/`rejected` "Human:/Assistant:" transcripts, .jsonl or
.jsonl.gz) or a preference file {"prompt": messages, "chosen", "rejected"}. Only pairs whose longer row
fills exactly --length tokens (after cutting the responses) with a prompt of at most --length/2 tokens are
used, so every batch has the same shape (rows × length, the shorter response of a pair right-padded, as in
training); the real (unpadded) and response tokens per row are printed.

FLOPs (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", sec. 2.1): a forward pass costs
≈ 2·N FLOPs per token and forward + backward ≈ 6·N, with N the non-embedding parameters (the attention
context term 2·n_layer·n_ctx·d_attn and the LM head are not counted, so this is a lower bound on the work
done). The fraction is of this machine's fp32 matmul rate, measured in the same run with `torch.matmul`,
counted two ways: "real" counts each row's real (unpadded) tokens, 6·N per token of a trained model's pass
and 2·N of a forward-only one (the work a padding-free implementation that computes every row separately
does: what the issue's targets count), and "computed" the positions the model's forward passes were given
(counted at the token embedding during the timed steps, with their gradient mode), which tether's packing
makes fewer than the real tokens when rows share a prefix (tether.packing) and more where bins have a
padded tail. Real above computed is work saved; computed ÷ peak is the arithmetic rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

STAGES = ["sft", "rm", "dpo", "dpo-cached", "grpo", "ppo"]
DEFAULT_MODEL = "~/.cache/tether/models/smollm2-135m-instruct"
DEFAULT_DATA = "/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz"


# ------------------------------------------------------------------------------------------------ machine


def matmul_peak(n: int = 2048, repeats: int = 8) -> float:
    """FLOP/s of the fastest of `repeats` fp32 (n × n) @ (n × n) products (2·n³ FLOPs each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def peak_rss_gb() -> float:
    """The process's peak resident set (VmHWM), GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def parameter_counts(model_path: str) -> tuple[int, int]:
    """(N, all): the causal LM's non-embedding parameters (without the token embedding and an untied LM head,
    Kaplan et al.'s N) and all its parameters, counted on the meta device (no weights in memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    emb = m.get_input_embeddings().weight.numel()
    head = m.get_output_embeddings()
    untied = head is not None and head.weight is not m.get_input_embeddings().weight
    n_params = sum(p.numel() for p in m.parameters())
    return n_params - emb - (head.weight.numel() if untied else 0), n_params


class Positions:
    """Counts the positions fed to every token embedding (nn.Embedding of ≥ 1000 rows: the vocabulary), split
    by whether gradients were being recorded: what the model computed, packed or not."""

    def __init__(self):
        self.train = self.forward = 0
        self.counting = False
        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(self.hook)  # every module

    def hook(self, module, args):
        if self.counting and isinstance(module, torch.nn.Embedding) and module.num_embeddings >= 1000:
            n = args[0].numel()
            if torch.is_grad_enabled():
                self.train += n
            else:
                self.forward += n


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


# ------------------------------------------------------------------------------------------------ data


def hh_turns(transcript: str) -> list[dict[str, str]]:
    """'\\n\\nHuman: …\\n\\nAssistant: …' → messages (user/assistant)."""
    roles = {"Human:": "user", "Assistant:": "assistant"}
    out: list[dict[str, str]] = []
    for chunk in transcript.split("\n\n"):
        head = next((k for k in roles if chunk.startswith(k)), None)
        if head is not None:
            out.append({"role": roles[head], "content": chunk[len(head) :].strip()})
        elif out:  # a paragraph break inside a turn
            out[-1]["content"] += "\n\n" + chunk
    return out


def read_records(path: str) -> list[dict]:
    """Preference records {"prompt", "chosen", "rejected"} from a preference file or a raw HH-RLHF file."""
    opener = gzip.open if path.endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            if "prompt" in obj:
                out.append(obj)
                continue
            chosen, rejected = hh_turns(obj["chosen"]), hh_turns(obj["rejected"])
            if len(chosen) < 2 or chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant":
                continue  # not one shared conversation followed by two answers
            out.append({"prompt": chosen[:-1], "chosen": chosen[-1]["content"],
                        "rejected": rejected[-1]["content"]})
    return out


def full_pairs(path: str, tokenizer, length: int, n: int):
    """The first `n` PairTokens whose longer row is exactly `length` tokens, with a prompt ≤ length / 2."""
    import logging

    from tether.preferences import PreferenceExample, tokenize_preferences

    logging.getLogger("tether.data").setLevel(logging.ERROR)  # one "cut" notice per pair otherwise

    out = []
    for i, r in enumerate(read_records(path)):
        if not r["chosen"].strip() or not r["rejected"].strip():
            continue
        ex = PreferenceExample(r["prompt"], r["chosen"], r["rejected"], path, i + 1)
        got, _ = tokenize_preferences([ex], tokenizer, length, too_long="skip")
        if not got:
            continue
        p = got[0]
        longest = len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids))
        if len(p.prompt_ids) <= length // 2 and longest == length:
            out.append(p)
            if len(out) == n:
                return out
    raise SystemExit(f"{path}: only {len(out)} pairs fill {length} tokens; need {n}")


# ------------------------------------------------------------------------------------------------ stages


class Bench:
    """What every stage needs: the model path, tokenizer, shapes, a Loop factory and the pairs."""

    def __init__(self, args):
        from transformers import AutoTokenizer

        from tether.data import pad_id

        self.args = args
        self.model_path = str(Path(args.model).expanduser())
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.pad = pad_id(self.tokenizer)
        n_batches = args.warmup + args.steps
        self.pairs = full_pairs(args.data, self.tokenizer, args.length, args.pairs * n_batches)
        self.run_dir = tempfile.mkdtemp(prefix="tether-bench-")

    def batches(self, items_per_step: int, items):
        for i in range(self.args.warmup + self.args.steps):
            yield items[i * items_per_step : (i + 1) * items_per_step]

    def loop(self, model, batch_size: int, extra_models=None):
        from tether.config import LoopConfig
        from tether.trainers.base import Loop

        cfg = LoopConfig(lr=1e-6, batch_size=batch_size, micro_batch_size=self.args.micro_batch or batch_size,
                         threads=self.args.threads, device="cpu", save_every=0,
                         gradient_checkpointing=self.args.grad_ckpt)
        return Loop(cfg, self.run_dir, model.train(), self.tokenizer, total_steps=1000,
                    extra_models=extra_models)

    def causal_lm(self):
        from tether.model_files import load_causal_lm

        return load_causal_lm(self.model_path, "float32")


def supervised_steps(bench: Bench, loop, task, items, per_step: int):
    """The inner loop of tether.trainers.supervised.fit: micro-batches, loss, backward, optimizer step."""
    from tether.trainers.supervised import micro_batches_per_step, to_device

    n_micro = micro_batches_per_step(loop.cfg, 1)
    for step_items in bench.batches(per_step, items):
        num_units = task.count(step_items)
        for j in range(n_micro):
            micro = step_items[j * loop.cfg.micro_batch_size : (j + 1) * loop.cfg.micro_batch_size]
            batch = to_device(task.collate(micro), loop.accelerator.device)
            with loop.accumulate(sync=j == n_micro - 1):
                loss, _ = task.loss(loop.model, batch, num_units)
                loop.backward(loss)
        loop.optimizer_step()
        yield


def stage_sft(bench: Bench):
    from tether.data import SFTTokens
    from tether.trainers.sft import SFTTask

    rows = 2 * bench.args.pairs  # as many sequences as a preference stage's batch
    items = [SFTTokens(p.prompt_ids, p.chosen_ids) for p in bench.pairs]
    items += [SFTTokens(p.prompt_ids, p.rejected_ids) for p in bench.pairs]
    loop = bench.loop(bench.causal_lm(), rows)
    task = SFTTask(bench.pad, loop.cfg.micro_batch_size)
    return supervised_steps(bench, loop, task, items, rows), {"rows": rows, "passes": {"train": 1}}


def stage_rm(bench: Bench):
    from tether.reward_model import create_reward_model
    from tether.trainers.rm import RMTask

    model, _ = create_reward_model(bench.model_path)
    loop = bench.loop(model, bench.args.pairs)
    task = RMTask(bench.pad, loop.cfg.micro_batch_size)
    items = list(bench.pairs)
    return supervised_steps(bench, loop, task, items, bench.args.pairs), {
        "rows": 2 * bench.args.pairs, "passes": {"train": 1}}


def stage_dpo(bench: Bench, cached: bool = False):
    from tether.config import DPOConfig, DPODataConfig
    from tether.trainers.dpo import DPOPair, DPOTask, reference_logprobs

    cfg = DPOConfig(policy=bench.model_path, data=DPODataConfig(train="-", max_length=bench.args.length))
    policy = bench.causal_lm()
    if bench.args.lora:  # LoRA: π_ref is the policy with its adapters off (tether.lora), no second model
        from tether import lora
        from tether.config import LoRAConfig

        policy = lora.add_adapters(policy, LoRAConfig(r=bench.args.lora, alpha=2.0 * bench.args.lora))
        reference = lora.AdaptersOff(policy)
    else:
        reference = bench.causal_lm().requires_grad_(False)
    items = [DPOPair(p) for p in bench.pairs]
    if cached:  # what attach_reference writes to RUN/ref_logprobs.pt, computed before training
        t = time.perf_counter()
        ref = reference_logprobs(reference, items, bench.pad, "sum", "cpu", bench.args.micro_batch or 4)
        bench.precompute_s = time.perf_counter() - t
        for x, (c, r) in zip(items, ref.tolist(), strict=True):
            x.ref = (c, r)
        reference = None
    loop = bench.loop(policy, bench.args.pairs)
    task = DPOTask(cfg, bench.tokenizer, reference)
    passes = {"train": 1} if cached else {"train": 1, "forward": 1}
    return supervised_steps(bench, loop, task, items, bench.args.pairs), {
        "rows": 2 * bench.args.pairs, "passes": passes}


def fixed_rollout(bench: Bench, rows: int, step: int):
    """A Rollout of `rows` sequences of exactly --length real tokens (the longer row of each pair, reused
    in turn): the first half of each is the prompt, the rest the response."""
    from tether.rollout import Rollout

    half = bench.args.length // 2
    seqs = [[*p.prompt_ids, *max(p.chosen_ids, p.rejected_ids, key=len)] for p in bench.pairs]
    ids = torch.tensor([seqs[(step * rows + i) % len(seqs)] for i in range(rows)])  # (rows, length)
    ones = torch.ones_like(ids)
    return Rollout(ids[:, :half], ones[:, :half], ids[:, half:], ones[:, half:],
                   torch.zeros(ids[:, half:].shape), torch.ones(rows, dtype=torch.bool), 1.0)


def rl_steps(bench: Bench, loop, make_exp, minibatch_loss, rows: int):
    """make_exp (the scoring passes) then `update_epochs` for one epoch of one minibatch: one step.

    The rollouts carry π_old's log-probs as the sampler records them while it samples (what a trainer at
    fp32 with the hf engine scores with, `RLRun.sampled_logprobs`, so that its scoring skips the policy's
    forward pass): sampling is not part of the step, so they are computed under the starting policy inside
    the first step, a warm-up one (untimed and uncounted unless --warmup 0)."""
    from tether.rollout import score_responses
    from tether.trainers.experience import update_epochs

    with torch.no_grad():
        rollouts = [fixed_rollout(bench, rows, step) for step in range(bench.args.warmup + bench.args.steps)]
        rollouts = [dataclasses.replace(r, logprobs=score_responses(loop.model, r)) for r in rollouts]
    for step, rollout in enumerate(rollouts):
        exp = make_exp(rollout, torch.randn(rows, generator=torch.Generator().manual_seed(step)))
        update_epochs(loop, exp, minibatch_loss, 1, None, loop.cfg.batch_size, loop.cfg.micro_batch_size,
                      torch.Generator().manual_seed(step))
        yield


def stage_grpo(bench: Bench):
    from tether.config import GRPOConfig, PPODataConfig
    from tether.losses import grpo_advantages
    from tether.trainers.group import GroupLoss, group_minibatch_loss, make_group_experience

    rows = 2 * bench.args.pairs
    cfg = GRPOConfig(policy=bench.model_path, data=PPODataConfig(train="-"))
    cfg.grpo.group_size, cfg.grpo.beta = 4, 0.04
    cfg.rollout.max_new_tokens = bench.args.length // 2
    g = cfg.grpo
    args = GroupLoss(beta=g.beta, eps_low=g.eps_low, eps_high=g.eps_high, aggregation=g.aggregation,
                     max_tokens=cfg.rollout.max_new_tokens)  # as grpo_iteration builds it
    ref = bench.causal_lm().requires_grad_(False)
    loop = bench.loop(bench.causal_lm(), rows)

    def make_exp(rollout, scores):
        return make_group_experience(loop.model, ref, rollout, scores, 0.0,
                                     lambda r: grpo_advantages(r, cfg.grpo.group_size, cfg.grpo.scale),
                                     "k1", loop.cfg.micro_batch_size, sampled_logprobs=True)

    def mb_loss(part, num_tokens, num_sequences):
        return group_minibatch_loss(loop.model, None, args, part, num_tokens, num_sequences)

    return rl_steps(bench, loop, make_exp, mb_loss, rows), {
        "rows": rows, "passes": {"train": 1, "forward": 1}}


def stage_ppo(bench: Bench):
    from tether.config import PPOConfig, PPODataConfig
    from tether.trainers.ppo import load_critic, make_experience, minibatch_loss

    rows = 2 * bench.args.pairs
    cfg = PPOConfig(policy=bench.model_path, data=PPODataConfig(train="-"), critic="policy")
    ref = bench.causal_lm().requires_grad_(False)
    critic = load_critic(cfg)
    loop = bench.loop(bench.causal_lm(), rows, extra_models={"value": critic})
    cfg.train.micro_batch_size = loop.cfg.micro_batch_size

    def make_exp(rollout, scores):
        return make_experience(loop.model, ref, loop.models["value"], rollout, scores, 0.05, cfg,
                               sampled_logprobs=True)

    def mb_loss(part, num_tokens, num_sequences):
        return minibatch_loss(loop.model, loop.models["value"], None, cfg.ppo, part, num_tokens)

    return rl_steps(bench, loop, make_exp, mb_loss, rows), {
        "rows": rows, "passes": {"train": 2, "forward": 2}}


def run_stage(args) -> dict:
    """Build the stage, run its steps, and return its measurements."""
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    makers = {"sft": stage_sft, "rm": stage_rm, "dpo": stage_dpo,
              "dpo-cached": lambda b: stage_dpo(b, cached=True), "grpo": stage_grpo, "ppo": stage_ppo}
    steps, shape = makers[args.child](bench)
    N, n_params = parameter_counts(bench.model_path)
    times = []
    positions = Positions()
    for i in range(args.warmup + args.steps):
        positions.counting = i >= args.warmup
        t = time.perf_counter()
        if args.profile and i == args.warmup - 1:  # the last warm-up step, under the profiler
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                next(steps)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
        else:
            next(steps)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    tokens = shape["rows"] * args.length
    pairs = bench.pairs
    response = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs) / len(pairs) / 2
    real = sum(len(p.prompt_ids) for p in pairs) / len(pairs) + response
    per_token = N * (6 * shape["passes"]["train"] + 2 * shape["passes"].get("forward", 0))
    flops = tokens * per_token
    rl = args.child in ("grpo", "ppo")  # their rows are full (fixed_rollout)
    real_tokens = tokens if rl else shape["rows"] * real
    computed = N * (6 * positions.train + 2 * positions.forward) / args.steps
    return {"stage": args.child, "rows": shape["rows"], "length": args.length, "tokens": tokens,
            "mean_response_tokens": response, "mean_real_tokens": real,
            "micro_batch": args.micro_batch or None, "lora": args.lora or None, "grad_ckpt": args.grad_ckpt,
            "step_s": times, "mean_step_s": sum(times) / len(times), "flops_per_step": flops,
            "real_tokens": real_tokens, "flops_real_per_step": real_tokens * per_token,
            "positions_per_step": {"train": positions.train / args.steps,
                                   "forward": positions.forward / args.steps},
            "flops_computed_per_step": computed,
            "non_embedding_params": N, "params": n_params, "peak_rss_gb": peak_rss_gb(),
            "precompute_s": getattr(bench, "precompute_s", None), "threads": torch.get_num_threads(),
            "load": os.getloadavg()[0]}


# ------------------------------------------------------------------------------------------------ main


def print_header() -> None:
    print(f"{'stage':<11}{'shape':<12}{'real/row':>9}{'resp/row':>9}{'s/step':>9}{'tokens/s':>10}"
          f"{'peak RSS':>10}{'real':>7}{'computed':>10}{'load':>6}   (real, computed: GFLOP/s ÷ matmul peak)",
          flush=True)


def print_row(r: dict, peak: float) -> None:
    real = r["flops_real_per_step"] / r["mean_step_s"] / peak
    computed = r["flops_computed_per_step"] / r["mean_step_s"] / peak
    shape = f"{r['rows']}x{r['length']}" + (f" mb{r['micro_batch']}" if r["micro_batch"] else "")
    shape += (f" lora{r['lora']}" if r.get("lora") else "") + (" ckpt" if r.get("grad_ckpt") else "")
    print(f"{r['stage']:<11}{shape:<12}{r['real_tokens'] / r['rows']:>9.0f}{r['mean_response_tokens']:>9.0f}"
          f"{r['mean_step_s']:>9.2f}{r['real_tokens'] / r['mean_step_s']:>10.0f}{r['peak_rss_gb']:>8.2f}GB"
          f"{real:>7.1%}{computed:>10.1%}{r['load']:>6.1f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="HF model directory (default: %(default)s)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="HH-RLHF .jsonl[.gz] or a tether preference file")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated, of: " + " ".join(STAGES))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per stage")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--pairs", type=int, default=4, help="pairs per step (other stages: 2 × pairs rows)")
    ap.add_argument("--length", type=int, default=256, help="tokens per row")
    ap.add_argument("--micro-batch", type=int, default=0, help="pairs (or rows) per forward pass; 0: all")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--grad-ckpt", action="store_true", help="train.gradient_checkpointing on")
    ap.add_argument("--lora", type=int, default=0, help="dpo stages: LoRA rank (0: full weights)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--profile", action="store_true",
                    help="print torch.profiler's top operators of the last warm-up step (untimed)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_stage(args)), flush=True)
        return 0

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    peak = matmul_peak()
    load0 = os.getloadavg()
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; "
          f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (2048² @ 2048², best of 8); load {load0[0]:.2f}")
    print(f"model: {args.model}; data: {args.data}; {args.warmup} warm-up + {args.steps} timed steps")
    results = []
    if not args.profile:
        print_header()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for stage in stages:
        cmd = [sys.executable, __file__, "--child", stage, *(sys.argv[1:] if argv is None else argv)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        out = proc.stdout.splitlines()
        line = next((x for x in out if x.startswith("RESULT ")), None)
        if args.profile:
            print(f"--- {stage}\n" + "\n".join(x for x in out if not x.startswith("RESULT ")))
        if proc.returncode or line is None:
            print(f"{stage}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(line[len("RESULT ") :]))
        if args.profile:
            print_header()
        print_row(results[-1], peak)
    load1 = os.getloadavg()
    n = results[0]["non_embedding_params"] if results else "?"
    print(f"load average at start {load0[0]:.2f}, at end {load1[0]:.2f}; FLOPs per step = tokens × N × "
          f"(6 per trained model + 2 per forward-only one), N = {n} non-embedding parameters (Kaplan et al. "
          "2020, sec. 2.1); real: the rows' real tokens, computed: the positions the forward passes ran; "
          "tokens/s: real tokens")
    if args.json:
        record = {"cpu": cpu_name(), "peak_flops": peak, "load": [load0, load1], "results": results}
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
