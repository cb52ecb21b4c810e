"""tether.config: YAML + key=value overrides, type checks that name the key, the resolved dump."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from tether import config as config_module
from tether.config import LoopConfig, SFTConfig, dump_config, load_config, sha256_file
from tether.errors import TetherError

ROOT = Path(__file__).resolve().parents[1]
BASE = ["model=m", "data.train=t.jsonl"]


def test_yaml_then_overrides_are_typed_by_the_fields(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\ndata: {train: t.jsonl, max_length: 64}\ntrain: {lr: 1e-4, epochs: 2}\n")
    cfg = load_config(SFTConfig, f, [
        "train.batch_size=16", "train.max_steps=5", "train.progress=false", "data.test=null",
        "train.betas=[0.8, 0.9]", "train.schedule=linear", "train.weight_decay=0.1", "seed=7",
    ])
    # YAML reads `1e-4` (no dot) as a string; a float field accepts it. An int (2) is accepted for a float.
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)
    assert (cfg.train.batch_size, cfg.train.max_steps, cfg.train.progress) == (16, 5, False)
    assert cfg.data.test is None and cfg.data.max_length == 64
    assert cfg.train.betas == [0.8, 0.9] and cfg.train.schedule == "linear" and cfg.seed == 7
    assert cfg.train.micro_batch_size == LoopConfig().micro_batch_size  # untouched fields keep defaults


def test_string_fields_take_the_override_text_verbatim():
    cfg = load_config(SFTConfig, None, ["model=123", "data.train=true", "tokenizer=null"])
    assert cfg.model == "123" and cfg.data.train == "true" and cfg.tokenizer is None


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["train.lrr=1"], "train.lrr"),  # unknown key in a section
        (["colour=red"], "colour"),  # unknown top-level key
        (["train.batch_size=abc"], "train.batch_size"),  # not an int
        (["train.batch_size=2.5"], "train.batch_size"),  # a float is not an int
        (["train.max_steps=true"], "train.max_steps"),  # a bool is not an int
        (["train.lr=fast"], "train.lr"),
        (["train.progress=maybe"], "train.progress"),
        (["train.schedule=exponential"], "train.schedule"),  # not one of the Literal's values
        (["train.betas=0.9"], "train.betas"),  # not a list
        (["train.betas=[0.9, x]"], "train.betas[1]"),
        (["model.name=x"], "model.name"),  # model is not a section
        (["train.lr"], "train.lr"),  # no '='
    ],
)
def test_bad_overrides_name_the_key(overrides, named):
    with pytest.raises(TetherError, match=re.escape(named)):
        load_config(SFTConfig, None, BASE + overrides)


def test_bad_yaml_keys_and_types_name_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\ndata: {train: t.jsonl, max_lenght: 3}\n")
    with pytest.raises(TetherError, match=r"unknown config key data\.max_lenght"):
        load_config(SFTConfig, f)
    f.write_text("model: m\ndata: {train: t.jsonl}\ntrain: {warmup_steps: ten}\n")
    with pytest.raises(TetherError, match=r"train\.warmup_steps: expected int, got 'ten'"):
        load_config(SFTConfig, f)
    f.write_text("- a list\n")
    with pytest.raises(TetherError, match="must be a mapping"):
        load_config(SFTConfig, f)


def test_missing_required_keys_are_named():
    with pytest.raises(TetherError, match="missing required config key model"):
        load_config(SFTConfig, None, ["data.train=t"])
    with pytest.raises(TetherError, match=r"missing required config key data\.train"):
        load_config(SFTConfig, None, ["model=m"])


def test_dump_records_provenance_and_loads_back(tmp_path):
    data = tmp_path / "abc.txt"
    data.write_bytes(b"abc")
    cfg = load_config(SFTConfig, None, ["model=m", f"data.train={data}", "train.lr=3e-4"])
    path = dump_config(cfg, tmp_path / "run", [str(data), None])
    doc = yaml.safe_load(path.read_text())
    prov = doc["provenance"]
    import torch
    import transformers

    import tether

    assert prov["torch_version"] == str(torch.__version__)
    assert prov["transformers_version"] == transformers.__version__
    assert prov["tether_version"] == tether.__version__
    # The SHA-256 of b"abc" is the FIPS 180-2 example value.
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert prov["data_sha256"] == {str(data): abc}
    assert sha256_file(data) == prov["data_sha256"][str(data)]
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", prov["git_commit"])
    assert load_config(SFTConfig, path) == cfg  # the provenance section is ignored on load


def test_every_field_has_a_docstring():
    """Each field of each config dataclass, in every module of the tether.config package, is followed by a
    string statement (its one-line 'why')."""
    modules = sorted(Path(config_module.__file__).parent.glob("*.py"))
    classes = [n for m in modules for n in ast.parse(m.read_text()).body if isinstance(n, ast.ClassDef)]
    checked = 0
    for cls in classes:
        body = cls.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                nxt = body[i + 1] if i + 1 < len(body) else None
                doc = isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                name = f"{cls.name}.{node.target.id}"
                assert doc and isinstance(nxt.value.value, str), f"{name} has no docstring"
                checked += 1
    expected = sum(len(dataclasses.fields(c)) for c in (LoopConfig, SFTConfig, config_module.SFTDataConfig))
    assert checked >= expected


def test_shipped_sft_config_is_valid():
    cfg = load_config(SFTConfig, ROOT / "configs" / "sft.yaml")
    assert cfg.train.micro_batch_size <= cfg.train.batch_size


# ------------------------------------------------------------------------------------------------ stages

STAGES = {
    "sft": (config_module.SFTConfig, ["model=m", "data.train=t"]),
    "rm": (config_module.RMConfig, ["model=m", "data.train=t"]),
    "dpo": (config_module.DPOConfig, ["policy=p", "data.train=t"]),
    "ppo": (config_module.PPOConfig, ["policy=p", "data.train=t", "reward.source=gold"]),
    "grpo": (config_module.GRPOConfig, ["policy=p", "data.train=t", "reward.source=gold"]),
    "rloo": (config_module.RLOOConfig, ["policy=p", "data.train=t", "reward.source=gold"]),
}
RL = ("ppo", "grpo", "rloo")


@pytest.mark.parametrize("stage", RL)
@pytest.mark.parametrize("item", ["train.max_steps=2", "train.epochs=2"])
def test_rl_stages_refuse_the_loop_length_keys(stage, item, tmp_path):
    """The RL trainers run `iterations` iterations and never read train.epochs or train.max_steps (see
    tether/trainers/rl.py): the loader refuses them, from an override and from YAML, naming iterations."""
    cls, base = STAGES[stage]
    key = item.split("=")[0]
    with pytest.raises(TetherError, match=rf"config key {re.escape(key)} .*use iterations") as e:
        load_config(cls, None, [*base, item])
    assert "\n" not in str(e.value)
    f = tmp_path / "c.yaml"
    f.write_text(f"train:\n  {key.split('.')[1]}: 2\n")
    with pytest.raises(TetherError, match=rf"config key {re.escape(key)} .*use iterations"):
        load_config(cls, f, base)


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_data_pass_stages_keep_epochs_and_max_steps(stage):
    cls, base = STAGES[stage]
    cfg = load_config(cls, None, [*base, "train.max_steps=2", "train.epochs=0.5"])
    assert (cfg.train.max_steps, cfg.train.epochs) == (2, 0.5)


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_dump_loads_back(stage, tmp_path):
    cls, base = STAGES[stage]
    cfg = load_config(cls, None, base)
    path = dump_config(cfg, tmp_path / "run")
    assert load_config(cls, path) == cfg


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("folder", ["configs", "tether/configs"])
def test_shipped_stage_configs_load(stage, folder):
    cls, _ = STAGES[stage]
    cfg = load_config(cls, ROOT / folder / f"{stage}.yaml")
    assert type(cfg) is cls


BAD_VALUES = [
    # (stage, override, the key named, what it must be)
    ("sft", "train.lr=0", "train.lr", "> 0"),
    ("sft", "train.lr=-1e-4", "train.lr", "> 0"),
    ("sft", "train.lr=nan", "train.lr", "finite"),
    ("sft", "train.lr=.inf", "train.lr", "finite"),
    ("rm", "train.batch_size=0", "train.batch_size", ">= 1"),
    ("rm", "train.micro_batch_size=0", "train.micro_batch_size", ">= 1"),
    ("sft", "train.batch_size=6", "train.batch_size", "multiple of micro_batch_size"),
    ("sft", "train.betas=[0.9]", "train.betas", "2 items"),
    ("sft", "train.betas=[0.9, 0.999, 0.5]", "train.betas", "2 items"),
    ("sft", "train.betas=[0.9, 1.0]", "train.betas[1]", "in [0, 1)"),
    ("sft", "train.betas=[-0.1, 0.9]", "train.betas[0]", "in [0, 1)"),
    ("sft", "train.max_steps=0", "train.max_steps", ">= 1"),
    ("sft", "train.epochs=0", "train.epochs", "> 0"),
    ("sft", "train.weight_decay=-0.1", "train.weight_decay", ">= 0"),
    ("sft", "train.warmup_steps=-1", "train.warmup_steps", ">= 0"),
    ("sft", "train.max_grad_norm=-1", "train.max_grad_norm", ">= 0"),
    ("sft", "train.max_bad_steps=0", "train.max_bad_steps", ">= 1"),
    ("sft", "train.log_every=0", "train.log_every", ">= 1"),
    ("sft", "train.eval_every=-1", "train.eval_every", ">= 0"),
    ("sft", "train.threads=-2", "train.threads", ">= 0"),
    ("sft", "seed=-1", "seed", "in [0, 4294967296)"),
    ("sft", "data.max_length=0", "data.max_length", ">= 1"),
    ("sft", "model=", "model", "non-empty"),
    ("sft", "lora.r=-1", "lora.r", ">= 0"),
    ("sft", "lora.alpha=0", "lora.alpha", "> 0"),
    ("sft", "lora.dropout=1", "lora.dropout", "in [0, 1)"),
    ("sft", "lora.target_modules=[]", "lora.target_modules", "at least 1 item"),
    ("ppo", "lora.bias=all", "lora.bias", "adapters-off reference"),
    ("rm", "lora.layers=[-1]", "lora.layers", "lora.r is 0"),
    ("ppo", "rollout.engine=vllm", "rollout.engine", "LoRA", ["lora.r=4"]),
    ("rloo", "rollout.engine=vllm", "rollout.engine", "LoRA", ["lora.r=4"]),
    ("rm", "center_coef=nan", "center_coef", "finite"),
    ("rm", "center_coef=-0.01", "center_coef", ">= 0"),
    ("dpo", "beta=0", "beta", "> 0"),
    ("dpo", "beta=.inf", "beta", "finite"),
    ("dpo", "label_smoothing=0.5", "label_smoothing", "in [0, 0.5)"),
    ("dpo", "eval.kl_prompts=-1", "eval.kl_prompts", ">= 0"),
    ("dpo", "eval.max_new_tokens=0", "eval.max_new_tokens", ">= 1"),
    ("dpo", "loss_type=ipo", "data.use_soft_labels", "sigmoid", ["data.use_soft_labels=true"]),
    ("ppo", "kl.beta=-1", "kl.beta", ">= 0"),
    ("ppo", "kl.beta=nan", "kl.beta", "finite"),
    ("ppo", "kl.horizon=0", "kl.horizon", "> 0"),
    ("ppo", "kl.target=0", "kl.target", "> 0"),
    ("ppo", "rollout.temperature=-0.5", "rollout.temperature", ">= 0"),
    ("ppo", "rollout.top_p=0", "rollout.top_p", "in (0, 1]"),
    ("ppo", "rollout.top_p=1.5", "rollout.top_p", "in (0, 1]"),
    ("ppo", "rollout.batch_size=0", "rollout.batch_size", ">= 1"),
    ("ppo", "rollout.batch_size=24", "rollout.batch_size", "multiple of train.batch_size"),
    ("ppo", "rollout.max_new_tokens=0", "rollout.max_new_tokens", ">= 1"),
    ("ppo", "rollout.stop=['']", "rollout.stop[0]", "non-empty"),
    ("ppo", "eval.max_prompts=0", "eval.max_prompts", ">= 1"),
    ("ppo", "ppo.clip_eps=0", "ppo.clip_eps", "> 0"),
    ("ppo", "ppo.gamma=1.5", "ppo.gamma", "in [0, 1]"),
    ("ppo", "ppo.lam=-0.1", "ppo.lam", "in [0, 1]"),
    ("ppo", "ppo.epochs=0", "ppo.epochs", ">= 1"),
    ("ppo", "ppo.max_approx_kl=0", "ppo.max_approx_kl", "> 0"),
    ("ppo", "iterations=0", "iterations", ">= 1"),
    ("ppo", "reward.no_eos_score=nan", "reward.no_eos_score", "finite"),
    ("grpo", "grpo.group_size=1", "grpo.group_size", ">= 2"),
    ("grpo", "grpo.beta=-0.1", "grpo.beta", ">= 0"),
    ("grpo", "grpo.eps_low=1", "grpo.eps_low", "in (0, 1)"),
    ("grpo", "rollout.temperature=0", "rollout.temperature", "> 0"),
    ("grpo", "reward.weight=0", "reward.weight", "nothing to optimise"),
    ("grpo", "train.batch_size=24", "train.batch_size", "divide", ["train.micro_batch_size=8"]),
    ("rloo", "rloo.k=1", "rloo.k", ">= 2"),
    ("rloo", "rloo.clip_eps=-0.2", "rloo.clip_eps", "> 0"),
]


@pytest.mark.parametrize(("stage", "item", "key", "rule", "more"), [(*b, [])[:5] for b in BAD_VALUES])
def test_bad_values_are_refused_at_load_naming_the_key(stage, item, key, rule, more):
    cls, base = STAGES[stage]
    with pytest.raises(TetherError, match=rf"config key {re.escape(key)} .*{re.escape(rule)}") as e:
        load_config(cls, None, [*base, *more, item])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("stage", ["ppo", "rloo"])
def test_greedy_sampling_is_accepted_where_it_can_train(stage):
    """tether.rollout.sample takes temperature 0 as greedy decoding (log-probs at T = 1), and PPO's critic
    still gives its one response per prompt an advantage. The group methods refuse it: the G greedy responses
    to a prompt are identical, so every advantage (score minus the group's baseline) is 0."""
    cls, base = STAGES[stage]
    if stage == "ppo":
        assert load_config(cls, None, [*base, "rollout.temperature=0"]).rollout.temperature == 0.0
    else:
        with pytest.raises(TetherError, match=r"config key rollout\.temperature must be > 0"):
            load_config(cls, None, [*base, "rollout.temperature=0"])


def test_a_python_built_config_is_checked_by_validate():
    cfg = load_config(config_module.PPOConfig, None, STAGES["ppo"][1])
    cfg.kl.beta = -1.0
    with pytest.raises(TetherError, match=r"config key kl\.beta must be >= 0"):
        config_module.validate(cfg)


@pytest.mark.parametrize(
    ("stage", "section", "field", "value", "message"),
    [
        ("ppo", "rollout", "batch_size", 24, "config key rollout.batch_size must be a multiple"),
        ("grpo", "grpo", "group_size", 1, "config key grpo.group_size must be >= 2"),
        ("rloo", "kl", "beta", -0.5, "config key kl.beta must be >= 0"),
        ("dpo", None, "beta", 0.0, "config key beta must be > 0"),
    ],
)
def test_trainers_check_a_python_built_config_first(stage, section, field, value, message, tmp_path):
    """A config changed in Python (not through the loader) meets the same rules when a trainer starts,
    before any file is read (the paths are placeholders) or written."""
    from tether.trainers.dpo import train_dpo
    from tether.trainers.grpo import train_grpo
    from tether.trainers.ppo import train_ppo
    from tether.trainers.rloo import train_rloo

    cls, base = STAGES[stage]
    cfg = load_config(cls, None, base)
    setattr(getattr(cfg, section) if section else cfg, field, value)
    train = {"ppo": train_ppo, "grpo": train_grpo, "rloo": train_rloo, "dpo": train_dpo}[stage]
    with pytest.raises(TetherError, match=re.escape(message)):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_duplicate_yaml_keys_name_the_file_and_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\ndata: {train: t}\ntrain:\n  lr: 1.0e-4\n  batch_size: 8\n  lr: 3.0e-4\n")
    with pytest.raises(TetherError, match=rf"^{re.escape(str(f))}:6: .*duplicate key 'lr'") as e:
        load_config(SFTConfig, f)
    assert "\n" not in str(e.value)
    f.write_text("model: m\nmodel: n\ndata: {train: t}\n")
    with pytest.raises(TetherError, match=rf"^{re.escape(str(f))}:2: .*duplicate key 'model'"):
        load_config(SFTConfig, f)


def test_a_yaml_syntax_error_is_one_line_with_the_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\ndata: {train: t\n")
    with pytest.raises(TetherError, match=rf"^{re.escape(str(f))}:\d+: ") as e:
        load_config(SFTConfig, f)
    assert "\n" not in str(e.value)


def test_nan_in_yaml_is_refused_for_a_float_field(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\ndata: {train: t}\ntrain: {lr: .nan}\n")
    with pytest.raises(TetherError, match=r"config key train\.lr must be a finite number"):
        load_config(SFTConfig, f)


# ------------------------------------------------------------------------------------------------ the CLI


def test_overrides_may_come_before_and_after_options(tmp_path, capsys):
    """`tether dpo policy=X --out Y beta=...`: both overrides reach the config (argparse alone stops the
    positional list at --out and calls the rest unrecognized). A bad value after --out proves the second
    one was read as an override: the loader, not argparse, refuses it, and nothing is written."""
    from tether.cli import main

    f = tmp_path / "tiny.yaml"
    f.write_text("data: {train: t.jsonl}\n")
    out = tmp_path / "run"
    code = main(["dpo", "--config", str(f), "policy=p", "--out", str(out), "beta=-0.2", "--seed", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err == "tether dpo: error: config key beta must be > 0, got -0.2\n"
    assert not out.exists()
    code = main(["ppo", "policy=p", "--out", str(out), "data.train=t", "train.max_steps=2"])
    err = capsys.readouterr().err
    assert code == 2 and "config key train.max_steps" in err and "unrecognized" not in err


def test_intermixed_overrides_keep_their_order():
    from tether.cli import build_parser

    args = build_parser().parse_args(["sft", "train.lr=1", "--out", "o", "train.lr=2", "--seed", "3", "x=y"])
    assert args.overrides == ["train.lr=1", "train.lr=2", "x=y"] and (args.out, args.seed) == ("o", 3)
    args = build_parser().parse_args(["run", "ppo.kl.beta=1", "--algo", "grpo", "grpo.iterations=2"])
    assert args.overrides == ["ppo.kl.beta=1", "grpo.iterations=2"] and args.algo == "grpo"


# ---------------------------------------------------------------------------------------------- keys that act

# (stage, the key set to a value that would do nothing, words of the reason, the settings that make it idle,
# the setting that makes it act). Each was accepted and ignored before: the loops evaluate only when data.test
# is set (trainers/rl.py and trainers/supervised.py test `test_items` / `eval_items` first); the approx-KL
# stop only cuts the epochs after the one that passed the bound (trainers/rl.py `update`), so with one epoch
# there is nothing to cut; greedy decoding takes the argmax before top_p is read (rollout._draw);
# no_eos=keep returns the scores untouched (rewards.NO_EOS); β stays fixed unless kl.adaptive, and only the
# adaptive controller reads target and horizon.
IDLE_KEYS = [
    *((s, "train.eval_every=10", "data.test", ["data.test=null"], "data.test=t") for s in STAGES),
    ("ppo", "ppo.max_approx_kl=0.1", "epochs > 1", ["ppo.epochs=1"], "ppo.epochs=2"),
    ("grpo", "grpo.max_approx_kl=0.1", "epochs > 1", ["grpo.epochs=1"], "grpo.epochs=2"),
    ("rloo", "rloo.max_approx_kl=0.1", "epochs > 1", ["rloo.epochs=1"], "rloo.epochs=2"),
    ("ppo", "rollout.top_p=0.9", "temperature 0", ["rollout.temperature=0"], "rollout.temperature=1"),
    ("ppo", "reward.no_eos_score=-2", "no_eos=keep", ["reward.no_eos=keep"], "reward.no_eos=offset"),
    ("grpo", "reward.no_eos_score=-2", "no_eos=keep", ["reward.no_eos=keep"], "reward.no_eos=replace"),
    ("ppo", "kl.target=3", "adaptive", [], "kl.adaptive=true"),
    ("rloo", "kl.horizon=500", "adaptive", [], "kl.adaptive=true"),
]


@pytest.mark.parametrize(("stage", "item", "reason", "idle", "acting"), IDLE_KEYS)
def test_a_key_that_would_not_act_is_refused_at_load(stage, item, reason, idle, acting):
    """Every key a stage accepts acts: a value that the stage would ignore in this combination is one line
    naming the key and what it needs, and the same value where it acts loads."""
    cls, base = STAGES[stage]
    key = item.split("=")[0]
    with pytest.raises(TetherError, match=rf"config key {re.escape(key)} .*{re.escape(reason)}") as e:
        load_config(cls, None, [*base, *idle, item])
    assert "\n" not in str(e.value)
    load_config(cls, None, [*base, *idle, acting, item])  # where the key acts, it loads
