"""train.report_to and the RL stages' sample table: TensorBoard's own event reader reads back what a tiny SFT
and a tiny PPO run logged and finds metrics.jsonl value by value; samples.jsonl against rewards and KLs
computed apart; a tracker whose library is missing is refused in one line before any model loads."""

import json
import math
import sys

import numpy as np
import pytest
import torch
from plumbing_helpers import sft_config, sft_setup
from ppo_helpers import count_a, ppo_config, ppo_setup

from tether.data import load_prompts, tokenize_prompts
from tether.errors import TetherError
from tether.instruments.evaluate import EVAL_BATCH_SIZE, EVAL_SEED_OFFSET, sample_responses
from tether.model_files import load_causal_lm, load_tokenizer
from tether.trainers.base import Loop
from tether.trainers.metrics import read_metrics
from tether.trainers.ppo import train_ppo
from tether.trainers.sft import train_sft

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(run_dir):
    """TensorBoard's EventAccumulator over RUN/tensorboard/tether (every scalar and text event kept)."""
    ea = event_accumulator.EventAccumulator(
        str(run_dir / "tensorboard" / "tether"), size_guidance={"scalars": 0, "tensors": 0}
    )
    ea.Reload()
    return ea


def expected_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} that metrics.jsonl says the trackers got: each record's numbers (bools as
    0/1) as kind/key at the record's step, as float32 (TensorBoard's scalar type)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in read_metrics(run_dir):
        for key, value in r.items():
            if key in ("step", "kind") or not isinstance(value, int | float):
                continue
            out.setdefault(f"{r['kind']}/{key}", []).append((r["step"], float(np.float32(value))))
    return out


def assert_same(events: dict[str, list[tuple[int, float]]], expected: dict[str, list[tuple[int, float]]]):
    assert sorted(events) == sorted(expected)
    for tag, pairs in expected.items():
        got = events[tag]
        assert [s for s, _ in got] == [s for s, _ in pairs], tag
        for (_, a), (_, b) in zip(got, pairs, strict=True):
            assert (math.isnan(a) and math.isnan(b)) or a == b, tag


def scalars(ea, prefix: str = "") -> dict[str, list[tuple[int, float]]]:
    tags = [t for t in ea.Tags()["scalars"] if t.startswith(prefix)]
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in tags}


def test_an_sft_run_sends_every_metrics_record_to_tensorboard(tmp_path):
    paths = sft_setup(tmp_path)
    out = tmp_path / "run"
    train_sft(sft_config(paths, report_to="[tensorboard]", max_steps=4, save_every=0, eval_every=2), out)
    ea = read_events(out)
    expected = expected_scalars(out)
    assert len(expected["train/loss"]) == 4 and [s for s, _ in expected["eval/test_loss"]] == [2, 4]
    assert_same(scalars(ea), expected)  # SFT has no instruments: no summary/ tags either


def wandb_history(wandb_dir) -> dict[str, list[tuple[int, float]]]:
    """{key: [(step, value)]} of every history row in the one offline run under `wandb_dir`, read from its
    .wandb file with wandb's own protobuf Record. The file is W&B's record log: a 7-byte header (":W&B",
    magic, version), then 32 KiB blocks of records, each behind a 7-byte header (crc32, length, type: 1 a
    whole record, 2-4 its first, middle and last piece), a block's tail shorter than a header left empty."""
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, piece, out = path.read_bytes(), 7, b"", {}
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        piece, pos = piece + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(piece)
            piece = b""
            if record.WhichOneof("record_type") == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                for key, value in row.items():
                    if not key.startswith("_"):
                        out.setdefault(key, []).append((row["_step"], value))
    return out


def test_an_sft_run_sends_every_metrics_record_to_wandb_offline(tmp_path, monkeypatch):
    """wandb in offline mode (nothing leaves the machine): the run's history rows, read back from the
    .wandb file, are metrics.jsonl's numbers value for value (float64, as logged) at the record's step."""
    pytest.importorskip("wandb")
    for name, value in (("WANDB_MODE", "offline"), ("WANDB_DIR", str(tmp_path)), ("WANDB_SILENT", "true")):
        monkeypatch.setenv(name, value)
    paths = sft_setup(tmp_path / "data")
    out = tmp_path / "run"
    train_sft(sft_config(paths, report_to="[wandb]", max_steps=3, save_every=0, eval_every=3), out)
    expected: dict[str, list[tuple[int, float]]] = {}
    for r in read_metrics(out):
        for key, value in r.items():
            if key not in ("step", "kind") and isinstance(value, int | float):
                expected.setdefault(f"{r['kind']}/{key}", []).append((r["step"], value))
    assert len(expected["train/loss"]) == 3 and expected["eval/test_loss"][0][0] == 3
    assert wandb_history(tmp_path) == expected


@pytest.fixture(scope="module")
def ppo_run_dir(tmp_path_factory):
    """A tiny PPO run (2 iterations, an evaluation after each) reporting to TensorBoard."""
    tmp = tmp_path_factory.mktemp("track-ppo")
    paths = ppo_setup(tmp)
    cfg = ppo_config(paths, "iterations=2", "train.report_to=[tensorboard]", eval_every=1)
    out = tmp / "run"
    train_ppo(cfg, out)
    return out, paths, cfg


def test_a_ppo_run_sends_metrics_and_the_summary_instruments_to_tensorboard(ppo_run_dir):
    out, _, _ = ppo_run_dir
    ea = read_events(out)
    expected = expected_scalars(out)
    assert [s for s, _ in expected["eval/kl_from_base"]] == [s for s, _ in expected["train/reward"]]
    assert_same(scalars(ea, "train/") | scalars(ea, "eval/"), expected)
    summary = json.loads((out / "summary.json").read_text())
    last = read_metrics(out)[-1]["step"]
    instruments = summary["instruments"]
    want = {f"summary/{k}": [(last, float(np.float32(v["value"])))] for k, v in instruments.items()}
    assert sorted(want) == ["summary/kl_from_base", "summary/win_rate_length_controlled",
                            "summary/win_rate_vs_base"]
    assert_same(scalars(ea, "summary/"), want)


def test_each_evaluation_writes_its_samples_and_sends_them_as_a_tensorboard_text_table(ppo_run_dir):
    """samples.jsonl: 8 held-out prompts × 2 evaluations, in the test file's order; each reward is the toy
    reward (count of "a") recomputed from the logged completion; no gold off the lab; the mean KL of each
    evaluation is the eval record's kl_from_base. TensorBoard's text tab has one table per evaluation, at
    its step, with every completion."""
    out, paths, _ = ppo_run_dir
    records = [json.loads(ln) for ln in (out / "samples.jsonl").read_text().splitlines()]
    prompts = [json.loads(ln)["prompt"] for ln in paths["test"].read_text().splitlines()]
    evals = [r for r in read_metrics(out) if r["kind"] == "eval"]
    assert [r["iteration"] for r in records] == [1] * 8 + [2] * 8
    assert [r["prompt"] for r in records] == prompts * 2
    assert [r["reward"] for r in records] == count_a(None, [r["completion"] for r in records])
    assert all(r["gold"] is None for r in records)
    for e in evals:
        kls = [r["kl"] for r in records if r["step"] == e["step"]]
        assert len(kls) == 8 and sum(kls) / 8 == pytest.approx(e["kl_from_base"], abs=1e-9)
    tables = read_events(out).Tensors("samples/text_summary")
    assert [t.step for t in tables] == [e["step"] for e in evals]
    for t, it in zip(tables, (1, 2), strict=True):
        text = t.tensor_proto.string_val[0].decode()
        rows = text.splitlines()[2:]
        assert len(rows) == 8
        for row, r in zip(rows, [r for r in records if r["iteration"] == it], strict=True):
            assert row.split(" | ")[2] == r["completion"]


def test_the_logged_kl_of_each_response_is_its_sequence_kl_from_the_base(ppo_run_dir):
    """The last evaluation ran on the final weights (RUN/model), so its policy samples can be drawn again with
    the evaluator's seed; each response's KL(π‖π_base) = Σ_t Σ_v π(v|s_t)·log(π(v|s_t)/π_base(v|s_t)) is
    computed here by teacher forcing one unpadded sequence at a time, and matches samples.jsonl's kl."""
    out, paths, cfg = ppo_run_dir
    tokenizer = load_tokenizer(out / "model")
    policy = load_causal_lm(str(out / "model"), "float32").eval()
    base = load_causal_lm(str(paths["policy"]), "float32").eval()
    items, _ = tokenize_prompts(load_prompts(paths["test"]), tokenizer, cfg.data.max_prompt_length)
    again = sample_responses(policy, tokenizer, items, max_new_tokens=cfg.rollout.max_new_tokens,
                             seed=cfg.seed + EVAL_SEED_OFFSET, batch_size=EVAL_BATCH_SIZE)
    logged = [json.loads(ln) for ln in (out / "samples.jsonl").read_text().splitlines()][-8:]
    assert again.responses == [r["completion"] for r in logged]
    (rollout,) = again.rollouts
    for b, r in enumerate(logged):
        prompt = rollout.prompt_ids[b][rollout.prompt_mask[b].bool()]
        response = rollout.response_ids[b][rollout.response_mask[b].bool()]
        seq = torch.cat([prompt, response])[None]
        with torch.no_grad():
            lp = torch.log_softmax(policy(seq).logits[0].double(), -1)[len(prompt) - 1 : -1]  # (R, V)
            lq = torch.log_softmax(base(seq).logits[0].double(), -1)[len(prompt) - 1 : -1]
        kl = float((lp.exp() * (lp - lq)).sum())
        assert r["kl"] == pytest.approx(kl, abs=1e-4)


def test_a_tracker_whose_library_is_missing_is_refused_before_any_model_loads(tmp_path, monkeypatch):
    """With `import tensorboard` failing (sys.modules entry None), report_to=[tensorboard] is one line naming
    the extra — at config load, and from a config built in Python before the model is read (the model
    directory here does not exist, which would be another error)."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError):
        import tensorboard  # noqa: F401
    paths = ppo_setup(tmp_path)
    with pytest.raises(TetherError) as e:
        ppo_config(paths, "train.report_to=[tensorboard]")
    said = str(e.value)
    assert "\n" not in said and "train.report_to" in said and "pip install 'tether[track]'" in said
    sft_paths = sft_setup(tmp_path / "sft")
    cfg = sft_config(sft_paths)
    cfg.train.report_to = ["tensorboard"]
    cfg.model = str(tmp_path / "no-such-model")
    with pytest.raises(TetherError, match=r"pip install 'tether\[track\]'"):
        train_sft(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_report_to_refuses_an_unknown_tracker_and_a_repeated_one(tmp_path):
    paths = ppo_setup(tmp_path)
    with pytest.raises(TetherError, match="is not one of"):
        ppo_config(paths, "train.report_to=[neptune]")
    with pytest.raises(TetherError, match="names a tracker twice"):
        ppo_config(paths, "train.report_to=[tensorboard, tensorboard]")
    assert ppo_config(paths).train.report_to == []


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tmp_path, monkeypatch):
    """A crash in step 4 (checkpoint at step 2, records of steps 1-3 written); the resumed run cuts
    metrics.jsonl back to steps 1-2 and writes 3-6 again. TensorBoard's reader, told by the resumed writer to
    purge from step 3 on, must show the same: each step once, with the resumed run's values."""
    paths = sft_setup(tmp_path)
    out = tmp_path / "run"
    cfg = sft_config(paths, report_to="[tensorboard]", max_steps=6, save_every=2)
    real = Loop.optimizer_step

    def crash_in_step_4(self):
        if self.state.step == 3:
            raise RuntimeError("crash")
        return real(self)

    monkeypatch.setattr(Loop, "optimizer_step", crash_in_step_4)
    with pytest.raises(RuntimeError, match="crash"):
        train_sft(cfg, out)
    first = expected_scalars(out)
    assert [s for s, _ in first["train/loss"]] == [1, 2, 3]
    monkeypatch.undo()
    train_sft(cfg, out, resume=True)
    expected = expected_scalars(out)
    assert [s for s, _ in expected["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert_same(scalars(read_events(out)), expected)
