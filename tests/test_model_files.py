"""tether.model_files: a model is a Hugging Face directory, a .gguf file or a Hub id, loaded from safetensors
only.

The GGUF here is written by the test (tests/gguf_helpers.py) from a tiny Llama whose weights we hold, so the
converted model must give exactly the source's logits: float32 tensors survive GGUF unchanged, and the only
transformation on the way (llama.cpp's q/k row order) is undone by the reader.
"""

from __future__ import annotations

import pytest
import torch
from gguf_helpers import CHAT_TEMPLATE, tiny_source_model, write_tiny_gguf
from plumbing_helpers import hub_cache

from tether import model_files
from tether.errors import TetherError
from tether.model_files import converted_dir, load_causal_lm, load_tokenizer, resolve_model
from tether.models import build_tiny_llama, build_word_tokenizer

IDS = torch.tensor([[3, 40, 41, 7, 99, 12, 2], [5, 6, 7, 8, 9, 10, 11]])


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    source = tiny_source_model().eval()
    return write_tiny_gguf(d / "tiny.gguf", source), source


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_gguf_converts_to_the_source_weights(tiny_gguf, cache, capfd):
    path, source = tiny_gguf
    model = load_causal_lm(path).eval()
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, source(IDS).logits)
    out = converted_dir(path)
    assert out.parent == cache / "models"  # the documented rule: $TETHER_CACHE/models/<stem>-<hash>
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert "quantization_config" not in (out / "config.json").read_text()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    assert "GGUF" not in capfd.readouterr().err  # the reader's own tqdm bar is not drawn


def test_gguf_tokenizer_keeps_vocabulary_specials_and_chat_template(tiny_gguf, cache):
    tok = load_tokenizer(tiny_gguf[0])
    # BPE merges "h e", "l l", "he ll", "hell o" make "hello" one token; "Ġ w" joins the space to w.
    assert tok.tokenize("hello world") == ["hello", "Ġw", "o", "r", "l", "d"]
    assert (tok.bos_token, tok.eos_token) == ("<|endoftext|>", "<|im_end|>")
    assert tok.chat_template == CHAT_TEMPLATE
    hi = [{"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(hi, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_the_logit_check_would_catch_a_wrong_qk_order(tmp_path, cache, monkeypatch):
    """Writing q/k without llama.cpp's reordering must change the converted model's output."""
    import gguf_helpers

    source = tiny_source_model().eval()
    monkeypatch.setattr(gguf_helpers, "interleave_rope_rows", lambda w, n_heads: w)
    model = load_causal_lm(write_tiny_gguf(tmp_path / "plain.gguf", source)).eval()
    with torch.no_grad():
        assert not torch.allclose(model(IDS).logits, source(IDS).logits, atol=1e-3)


def test_second_resolve_reuses_the_conversion(tiny_gguf, cache, monkeypatch):
    first = resolve_model(tiny_gguf[0])
    stamp = (first / "model.safetensors").stat().st_mtime_ns

    def no_second_conversion(*args):
        raise AssertionError("converted twice")

    monkeypatch.setattr(model_files, "convert_gguf", no_second_conversion)
    assert resolve_model(tiny_gguf[0]) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_copy_with_another_name_shares_the_content_key(tiny_gguf, tmp_path, cache):
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(tiny_gguf[0].read_bytes())
    assert converted_dir(copy).name.split("-")[-1] == converted_dir(tiny_gguf[0]).name.split("-")[-1]


def test_hf_directory_loads_as_saved(tmp_path):
    tok = build_word_tokenizer(["a", "b", "c"])
    source = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=3).eval()
    source.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model = load_causal_lm(tmp_path / "m").eval()
    ids = torch.tensor([[2, 4, 5, 6, 3]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, source(ids).logits)
    assert load_tokenizer(tmp_path / "m").tokenize("a c b") == ["a", "c", "b"]
    assert resolve_model(tmp_path / "m") == tmp_path / "m"  # a directory is used in place


def test_pickled_weights_are_refused(tmp_path):
    source = build_tiny_llama(8, hidden_size=16, num_layers=1, num_heads=2)
    source.config.save_pretrained(tmp_path)
    torch.save(source.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(TetherError, match=r"only pickled \.bin weights"):
        load_causal_lm(tmp_path)


@pytest.mark.parametrize(
    "name, problem",
    [("missing", "no model at"), ("notes.txt", "not a model"), ("empty_dir", "no config.json")],
)
def test_bad_paths_give_one_line_errors(tmp_path, name, problem):
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(TetherError, match=problem) as e:
        load_causal_lm(tmp_path / name)
    assert "\n" not in str(e.value)


def test_a_broken_gguf_is_a_tether_error(tmp_path, cache):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF but not really")
    with pytest.raises(TetherError, match="cannot read"):
        resolve_model(tmp_path / "broken.gguf")


def test_reward_model_trunk_from_a_gguf(tiny_gguf, cache):
    from tether.reward_model import create_reward_model

    path, source = tiny_gguf
    rm, tok = create_reward_model(path)
    trunk = dict(rm.base_model.state_dict())
    for name, value in source.model.state_dict().items():
        assert torch.equal(trunk[name], value), name
    assert tok.eos_token == "<|im_end|>"


def test_the_hash_is_read_once_until_the_file_changes(tmp_path, monkeypatch):
    """file_sha256 reads a file once per (path, size, mtime); an edit (new mtime) is hashed again. The
    expected digests come from hashlib directly over the bytes written."""
    import hashlib
    import os

    f = tmp_path / "m.gguf"
    f.write_bytes(b"first")
    assert model_files.file_sha256(f) == hashlib.sha256(b"first").hexdigest()
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert model_files.file_sha256(f) == hashlib.sha256(b"first").hexdigest()
    assert reads == []
    f.write_bytes(b"other")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert model_files.file_sha256(f) == hashlib.sha256(b"other").hexdigest()
    assert len(reads) == 1


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # no local folder named like the repository
    return tmp_path / "hub"


def test_a_hub_id_loads_from_the_offline_hf_cache(tmp_path, offline_hub):
    tok = build_word_tokenizer(["a", "b", "c"])
    source = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=5).eval()
    source.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    snapshot = hub_cache(offline_hub, "someone/tiny-llama", tmp_path / "m")
    assert resolve_model("someone/tiny-llama") == snapshot
    model = load_causal_lm("someone/tiny-llama").eval()
    ids = torch.tensor([[2, 4, 5, 6, 3]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, source(ids).logits)
    assert load_tokenizer("someone/tiny-llama").tokenize("a c b") == ["a", "c", "b"]


def test_a_hub_id_offline_and_not_cached_is_one_line(offline_hub):
    with pytest.raises(TetherError) as e:
        load_causal_lm("someone/not-cached")
    assert str(e.value) == ("no model at 'someone/not-cached': not a local directory or .gguf file, and the "
                            "Hub model someone/not-cached could not be fetched (HF_HUB_OFFLINE is set and it "
                            "is not in the Hugging Face cache)")


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(tmp_path, offline_hub):
    tok = build_word_tokenizer(["a"])
    model = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2)
    model.save_pretrained(tmp_path / "x" / "y")
    assert resolve_model("x/y").resolve() == (tmp_path / "x" / "y").resolve()  # no Hub lookup: none cached


class RecordingHub:
    """Stands in for huggingface_hub.HfApi: records the calls; `fail` makes the upload raise as the Hub does
    without a token."""

    def __init__(self, fail: bool = False):
        self.calls, self.fail = [], fail

    def create_repo(self, repo, private, exist_ok):
        self.calls.append(("create_repo", repo, private, exist_ok))
        return f"https://huggingface.co/{repo}"

    def upload_folder(self, folder_path, repo_id, ignore_patterns, commit_message):
        if self.fail:
            raise RuntimeError("401 Client Error: Unauthorized\nInvalid credentials")
        self.calls.append(("upload_folder", folder_path, repo_id, tuple(ignore_patterns)))


def test_push_uploads_a_model_directory_and_refuses_in_one_line(tmp_path, monkeypatch):
    """A model directory goes up whole (hidden temporary files left out) to a repository created when
    missing; a directory without weights, a bad name, HF_HUB_OFFLINE and a refusing Hub are each one line,
    and nothing is uploaded."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    build_tiny_llama(8, hidden_size=16, num_layers=1, num_heads=2).save_pretrained(tmp_path / "model")
    hub = RecordingHub()
    url = model_files.push_model(tmp_path / "model", "me/tiny", private=True, api=hub)
    assert url == "https://huggingface.co/me/tiny"
    assert hub.calls == [("create_repo", "me/tiny", True, True),
                         ("upload_folder", str(tmp_path / "model"), "me/tiny", (".*",))]
    (tmp_path / "empty").mkdir()
    for directory, repo, problem in [(tmp_path / "empty", "me/tiny", "not a model directory"),
                                     (tmp_path / "model", "tiny", "'tiny' is not a Hub repository name"),
                                     (tmp_path / "model", "me/tiny@main", "is not a Hub repository name")]:
        with pytest.raises(TetherError, match=problem):
            model_files.push_model(directory, repo, api=hub)
    with pytest.raises(TetherError, match=r"^cannot push to me/tiny: 401 Client Error: Unauthorized Invalid "
                                          r"credentials$"):
        model_files.push_model(tmp_path / "model", "me/tiny", api=RecordingHub(fail=True))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TetherError, match="^cannot push to me/tiny: HF_HUB_OFFLINE is set$"):
        model_files.push_model(tmp_path / "model", "me/tiny", api=hub)
    assert len(hub.calls) == 2
