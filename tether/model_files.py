"""Where every model tether trains or scores comes from: a local Hugging Face directory, a `.gguf` file, or a
Hugging Face Hub model id.

    path = resolve_model("SmolLM2-135M-Instruct.Q4_1.gguf")   # converted once, then the cached directory
    model = load_causal_lm(path, dtype="float32")              # safetensors weights only, no pickle
    tokenizer = load_tokenizer(path)
    path = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")   # a Hub id: its snapshot in the HF cache

A `.gguf` file is converted once with transformers' GGUF reader (it dequantises every tensor to float32) into
a normal directory — config.json, model.safetensors, tokenizer files and chat template — under the cache:

    $TETHER_CACHE/models/<file stem>-<first 16 hex digits of the file's SHA-256>/
    (TETHER_CACHE unset: ~/.cache/tether)

Keyed by content, so a renamed or moved copy of the same file reuses the conversion and an edited file gets a
new one. The directory is written under a temporary name and renamed into place when complete, so an
interrupted conversion never leaves a directory that reads as finished; the next call simply finds it.

A Hub id `owner/name` (or `owner/name@revision`) that is not a local path is fetched by huggingface_hub into
its own cache (HF_HOME / HF_HUB_CACHE) and read from there; with HF_HUB_OFFLINE=1 only the cache is read.
Only the files a model directory needs are fetched (json, safetensors, tokenizer and template files), never
pickled `.bin` weights.

Weights load from safetensors only (`use_safetensors=True`): a directory with only pickled `.bin` weights is
refused rather than unpickled. `trust_remote_code` is passed to transformers as given (tether's configs
default it to false), so custom modelling code in a directory never runs unless the user asks for it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
from pathlib import Path

import torch

from tether.errors import TetherError
from tether.quiet import quiet_transformers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}


def cache_root() -> Path:
    """$TETHER_CACHE if set, else ~/.cache/tether (converted and pulled models live in its models/)."""
    env = os.environ.get("TETHER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tether"


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read once per process for as long as its path, size and mtime stay the same (every
    model load resolves the path again, and hashing a 100 MB file each time costs about 0.3 s)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def dir_sha256(directory: str | Path) -> str:
    """SHA-256 over every file in a model directory, each by its relative name and `file_sha256`: two
    directories with the same files give the same value, a file added, removed or changed another."""
    root = Path(directory)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(root).as_posix()}={file_sha256(path)};".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# owner/name[@revision], as the Hub spells repository ids
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@[\w./-]+)?$")
# what a model directory needs from a Hub repository: config, safetensors weights, tokenizer and chat template
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def hub_snapshot(repo: str) -> Path:
    """The local directory of Hub model `owner/name[@revision]`: huggingface_hub's snapshot of HUB_FILES in
    its cache, fetched when missing unless HF_HUB_OFFLINE is set. TetherError, in one line, when it is neither
    cached nor reachable."""
    from huggingface_hub import constants, snapshot_download

    name, _, revision = repo.partition("@")
    try:
        with quiet_transformers():
            return Path(snapshot_download(name, revision=revision or None, allow_patterns=HUB_FILES))
    except Exception as e:  # offline and not cached, unreachable, no such repository, gated, ...
        why = ("HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" if constants.HF_HUB_OFFLINE
               else _one_line(e))
        raise TetherError(f"no model at {repo!r}: not a local directory or .gguf file, and the Hub model "
                          f"{name} could not be fetched ({why})") from None


def push_model(directory: str | Path, repo: str, private: bool = False, api=None) -> str:
    """Upload the model directory (e.g. RUN/model: weights, tokenizer and its README.md model card) to the
    Hub repository `owner/name`, created when missing; returns the repository's URL. TetherError, in one
    line, for a directory that is not a model, with HF_HUB_OFFLINE set, or when the Hub refuses (no token,
    no network, no right to write). `api`: a huggingface_hub.HfApi (tests pass their own)."""
    from huggingface_hub import HfApi, constants

    directory = Path(directory)
    if not (directory / "config.json").is_file() or not any(directory.glob("*.safetensors")):
        raise TetherError(f"{directory}: not a model directory (config.json and safetensors weights)")
    if not HUB_ID.match(repo) or "@" in repo:
        raise TetherError(f"{repo!r} is not a Hub repository name (owner/name)")
    if constants.HF_HUB_OFFLINE:
        raise TetherError(f"cannot push to {repo}: HF_HUB_OFFLINE is set")
    api = api or HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(directory), repo_id=repo, ignore_patterns=[".*"],
                          commit_message=f"Upload {directory.name} from tether")
    except Exception as e:  # no token, no network, no right to write, ...
        raise TetherError(f"cannot push to {repo}: {_one_line(e)}") from None
    return str(url)


def converted_dir(gguf: str | Path, cache: str | Path | None = None) -> Path:
    """The directory `resolve_model(gguf)` converts into (whether or not it exists yet)."""
    gguf = Path(gguf)
    root = Path(cache) if cache is not None else cache_root() / "models"
    return root / f"{gguf.stem}-{file_sha256(gguf)[:16]}"


def resolve_model(path: str | Path, cache: str | Path | None = None) -> Path:
    """A directory transformers can load: `path` itself, the cached conversion of a `.gguf` file, or the
    snapshot of a Hub id (`hub_snapshot`) when no local path of that name exists.

    cache: the folder conversions go into (default: cache_root()/models). TetherError when `path` is missing
    or neither a directory nor a .gguf file.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if not p.exists() and HUB_ID.match(str(path)):
        return hub_snapshot(str(path))
    if not p.exists():
        raise TetherError(f"no model at {str(path)!r}: give a model directory, a .gguf file or a Hub id")
    if p.suffix.lower() != ".gguf":
        raise TetherError(f"{path}: not a model (expected a Hugging Face directory or a .gguf file)")
    out = converted_dir(p, cache)
    if not (out / "config.json").is_file():
        convert_gguf(p, out)
    return out


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantise `gguf` to a float32 Hugging Face directory at `out`, written atomically (tmp, rename).

    transformers marks a model read from GGUF as quantised and refuses to save it, so the weights are moved
    into a fresh model built from the same config without its `quantization_config`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet_transformers(), _no_gguf_bar():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            source = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
    except Exception as e:  # a truncated or foreign file fails anywhere in the reader (struct, numpy, ...)
        raise TetherError(f"cannot read {gguf} as a GGUF model: {_one_line(e)}") from None
    settings = source.config.to_dict()
    settings.pop("quantization_config", None)
    config = type(source.config).from_dict(settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(source.state_dict())
    model.generation_config = source.generation_config

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with quiet_transformers():
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process finished the same conversion first: keep theirs
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@contextlib.contextmanager
def _no_gguf_bar():
    """transformers' GGUF reader draws its own tqdm bar ("Converting and de-quantizing GGUF tensors"), outside
    its progress-bar switch; swap it for a plain loop while converting."""
    import transformers.modeling_gguf_pytorch_utils as reader

    bar = getattr(reader, "tqdm", None)
    reader.tqdm = lambda items, *args, **kwargs: items
    try:
        yield
    finally:
        if bar is None:
            del reader.tqdm
        else:
            reader.tqdm = bar


def weights_dir(path: str | Path, cache: str | Path | None = None) -> Path:
    """`resolve_model(path)`, checked to hold safetensors weights (TetherError for .bin-only or none)."""
    d = resolve_model(path, cache)
    if not (d / "config.json").is_file():
        raise TetherError(f"{path}: not a model directory (no config.json)")
    if any(d.glob("*.safetensors")) or any(d.glob("*.safetensors.index.json")):
        return d
    if any(d.glob("*.bin")) or any(d.glob("*.bin.index.json")):
        raise TetherError(
            f"{path}: only pickled .bin weights, which tether does not load; save it with safetensors "
            "(model.save_pretrained(dir, safe_serialization=True))"
        )
    raise TetherError(f"{path}: no weights (no *.safetensors file)")


def load_causal_lm(path: str | Path, dtype: str | torch.dtype = "float32", trust_remote_code: bool = False):
    """The causal LM at `path` (a directory or .gguf), weights from safetensors; dtype: a DTYPES name or a
    torch dtype. In eval mode, as transformers returns it (no dropout)."""
    from transformers import AutoModelForCausalLM

    d = weights_dir(path)
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    try:
        with quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(
                d, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
            )
    except (OSError, ValueError) as e:
        raise TetherError(f"cannot load the model {str(path)!r}: {_one_line(e)}") from None


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The tokenizer at `path` (a directory, or the conversion of a .gguf file)."""
    from transformers import AutoTokenizer

    d = resolve_model(path)
    try:
        return AutoTokenizer.from_pretrained(d, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise TetherError(f"cannot load the tokenizer of {str(path)!r}: {_one_line(e)}") from None


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."
