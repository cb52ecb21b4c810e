"""`tether merge` (tether.lora_merge) and tether.lora's files on a tiny Llama with hand-set adapters (no
training): merged weights are base + (alpha/r)·B·A, the merged model's logits equal the adapted model's, the
directory loads with `from_pretrained`, and a bad adapter directory is one clear error, nothing written."""

import json

import pytest
import torch
from lora_helpers import merged_is_base_plus_adapter
from plumbing_helpers import tiny_model, tiny_tokenizer, write_model_dir
from transformers import AutoModelForCausalLM

from tether import cli, lora, lora_merge
from tether.config import LoRAConfig
from tether.errors import TetherError

IDS = torch.tensor([[2, 4, 9, 5, 12, 3], [2, 7, 7, 6, 8, 3]])


@pytest.fixture
def adapted(tmp_path):
    """A base directory and an adapter over it whose B matrices are set to random values (B = 0 at
    creation would make the merge a no-op)."""
    base_dir = write_model_dir(tmp_path / "base", seed=0)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    model = lora.add_adapters(model, LoRAConfig(r=4, alpha=8), "causal", base_dir)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    run = tmp_path / "run"
    run.mkdir()
    lora.save_lora_final(model, tiny_tokenizer(), run)
    return base_dir, run, model


def test_merged_weights_are_base_plus_scaled_b_a(adapted):
    base_dir, run, _ = adapted
    merged_is_base_plus_adapter(base_dir, run)


def test_merge_command_writes_a_model_with_the_adapted_logits(adapted, tmp_path):
    """Merged logits vs adapter logits: the same function computed in another order (W + s·BA)x vs
    Wx + s·B(Ax), float32 rounding only: atol 1e-5."""
    _, run, model = adapted
    out = tmp_path / "merged"
    assert cli.main(["merge", str(run / "adapter"), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        want = model(input_ids=IDS).logits
        got = merged(input_ids=IDS).logits
        base = lora.AdaptersOff(model)(input_ids=IDS).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (want - base).abs().max() > 1e-3  # the adapters do change the logits


def test_merge_with_a_moved_base_needs_base(adapted, tmp_path, capsys):
    """The adapter names a base directory that has moved: the merge is refused with a hint, nothing is
    written; with --base at the new place the merged weights are that base + (alpha/r)·B·A."""
    base_dir, run, _ = adapted
    moved = tmp_path / "moved-base"
    base_dir.rename(moved)
    out = tmp_path / "merged"
    assert cli.main(["merge", str(run / "adapter"), "--out", str(out)]) == 2
    assert "give --base" in capsys.readouterr().err and not out.exists()
    assert cli.main(["merge", str(run / "adapter"), "--out", str(out), "--base", str(moved)]) == 0
    merged_is_base_plus_adapter(moved, run, merged_dir=out)


def test_not_an_adapter_directory_is_refused(tmp_path):
    with pytest.raises(TetherError, match="not an adapter directory"):
        lora_merge.merge_adapter(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_lora_settings_are_refused():
    model = tiny_model()
    with pytest.raises(TetherError, match="lora.alpha must be > 0"):
        lora.add_adapters(model, LoRAConfig(r=4, alpha=0))
    with pytest.raises(TetherError, match="lora:"):
        lora.add_adapters(model, LoRAConfig(r=4, target_modules=["no_such_proj"]))
    with pytest.raises(TetherError, match="lora.bias"):  # biases would train in place: π_ref would move
        lora.add_adapters(model, LoRAConfig(r=4, bias="all"))


def test_lora_layers_puts_adapters_in_the_named_blocks_only():
    """The tiny Llama has 2 blocks of 7 linear layers (q, k, v, o, gate, up, down). lora.layers=[-1] is
    block 1: its 7 layers get an adapter and block 0's none, so nothing below block 1 needs a gradient
    (block 0's output does not require one: the backward pass stops at block 1). The seq_cls head trains
    in full as without lora.layers. An index past the blocks is refused."""
    from transformers import LlamaForSequenceClassification

    model = lora.add_adapters(tiny_model(), LoRAConfig(r=4, layers=[-1]))
    adapted = {n.removesuffix(".lora_A.default.weight").split(".layers.")[1]
               for n, _ in model.named_parameters() if ".lora_A." in n}
    parts = ("q_proj", "k_proj", "v_proj", "o_proj")
    assert adapted == {*(f"1.self_attn.{p}" for p in parts),
                       *(f"1.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj"))}
    out = model(input_ids=IDS, output_hidden_states=True)
    assert not out.hidden_states[1].requires_grad  # block 0's output
    assert out.hidden_states[2].requires_grad
    assert [n for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n] == []

    config = tiny_model().config
    config.num_labels = 1
    head = lora.add_adapters(LlamaForSequenceClassification(config), LoRAConfig(r=4, layers=[0]), "seq_cls")
    trained = [n for n, p in head.named_parameters() if p.requires_grad]
    assert any("score" in n for n in trained) and not any(".layers.1." in n for n in trained)
    with pytest.raises(TetherError, match=r"lora.layers: 2 is not a block of this model, which has 2"):
        lora.add_adapters(tiny_model(), LoRAConfig(r=4, layers=[0, 2]))


def test_an_adapter_over_a_gguf_base_merges(tmp_path, monkeypatch):
    """A LoRA run whose base was a .gguf records the directory the file was converted into, so `tether
    merge` finds the base again; with B = 0 (no update yet) the merged logits are the base's own."""
    from gguf_helpers import tiny_source_model, write_tiny_gguf

    from tether.model_files import load_causal_lm, resolve_model

    monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "cache"))
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_source_model().eval())
    base = load_causal_lm(gguf)
    model = lora.add_adapters(load_causal_lm(gguf), LoRAConfig(r=4), "causal", gguf)
    lora.save_adapter(model, tmp_path / "adapter")
    recorded = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert recorded["base_model_name_or_path"] == str(resolve_model(gguf).resolve())
    merged_dir = lora_merge.merge_adapter(tmp_path / "adapter", tmp_path / "m")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    ids = torch.tensor([[1, 5, 9, 3]])
    assert torch.equal(merged(ids).logits, base(ids).logits)
