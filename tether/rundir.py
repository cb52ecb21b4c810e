"""Run directories: a directory a command writes to (`--out`) is tether's own, of that command's kind, or it
is refused; and one process at a time writes to it.

    with claim(out, "dpo", must_exist=resume, legacy=made_by_config(DPOConfig)) as path:
        ...   # write into `out`; `path` is `out` resolved (`a/b/..` is `a`)

The rules:
- Ownership. A directory is the command's when it is missing or empty, or when its marker OUT/.tether-run.json
  (written when tether created the directory) names the same kind (e.g. "dpo", "eval", "merge"). A marker of
  another kind is refused ("holds the output of tether sft"), and so is any other non-empty directory: tether
  never writes into, or deletes from, a directory it did not make. Files a user adds inside a tether directory
  are left alone: commands delete only files they wrote themselves, by name.
- Directories made before markers existed are recognised by their layout (`legacy`): a training stage or
  `tether run` by its config.yaml, which must carry the provenance block `dump_config` writes and only keys
  of the stage's config (see `made_by_config`); an output directory (eval, lab build, data import, ...) by
  holding only the files that command writes, its summary.json of the command's shape. No marker is added.
- Lock. While a command works, OUT/.tether-lock holds its pid, host, kind and start time, and the process
  holds an exclusive `flock` on it. A second command on the same directory is refused, naming the first. A
  lock file whose flock is free and whose pid is not running on this host was left by a process that was
  killed: it is taken over, with a one-line warning (safe: only a live process can be writing, and that pid
  is gone). A lock file naming a live pid is respected even when its flock is free (a file system whose locks
  do not reach, a pid reused by an unrelated process: then the message says which file to delete). A lock
  from another host is never taken over, since this machine cannot tell whether that process still runs.
- Failure. When the command's work raises before writing anything, the marker the claim wrote is removed
  again, and so are the directories the claim created: a failed start leaves nothing.

With several processes (torchrun, accelerate launch) only the main one (RANK 0) creates, marks and locks; the
others check ownership only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import inspect
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import yaml

from tether.errors import TetherError
from tether.files import write_json

try:
    import fcntl
except ImportError:  # not POSIX: the pid in the lock file is the only guard
    fcntl = None

log = logging.getLogger(__name__)

MARKER = ".tether-run.json"
LOCK = ".tether-lock"
CLAIM_FILES = (LOCK, f".{MARKER}.tmp")  # what a claim has in the directory before its marker is in place


def _shown(out: Path, path: Path) -> str:
    """The path as the user gave it, with what it resolves to when that is not plain from it."""
    return str(out) if ".." not in out.parts and not out.is_symlink() else f"{out} (that is {path})"


def read_marker(path: Path) -> dict | None:
    """The marker of directory `path` ({"kind", ...}), None without one; TetherError if it is unreadable."""
    file = path / MARKER
    if not file.is_file():
        return None
    try:
        marker = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise TetherError(f"{file}: unreadable run marker ({e}); move the directory aside") from None
    if not isinstance(marker, dict) or not isinstance(marker.get("kind"), str):
        raise TetherError(f"{file}: not a tether run marker; move the directory aside")
    return marker


def check(
    out: str | Path, kind: str, *, must_exist: bool = False, legacy: Callable[[Path], bool] | None = None
) -> bool:
    """Whether `out` may be written by tether `kind` (see the module's rules), without touching it: True when
    it is new (missing or empty), False when it is already the kind's; TetherError otherwise. must_exist:
    a missing directory is an error (resuming)."""
    out = Path(out)
    path = out.resolve()
    shown = _shown(out, path)
    try:
        return _check(path, shown, kind, must_exist, legacy)
    except OSError as e:
        raise TetherError(f"cannot read {shown}: {e.strerror or e}") from None


def _check(path: Path, shown: str, kind: str, must_exist: bool, legacy) -> bool:
    if not path.exists():
        if must_exist:
            raise TetherError(f"cannot resume: {shown} does not exist")
        return True
    if not path.is_dir():
        raise TetherError(f"{shown} is a file, not a directory")
    if not [p for p in path.iterdir() if p.name not in CLAIM_FILES]:  # nothing, or a claim being made
        return True
    marker = read_marker(path)
    if marker is not None:
        if marker["kind"] != kind:
            raise TetherError(f"{shown} holds the output of tether {marker['kind']}, not of tether {kind}; "
                              "choose another directory")
        return False
    if legacy is not None and legacy(path):
        return False
    raise TetherError(f"{shown} is not empty and was not written by tether {kind} (it has no {MARKER}); "
                      "choose an empty or new directory")


def is_main_process() -> bool:
    """The main process of a multi-process launch (or the only process)."""
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def claim(out: str | Path, kind: str, *, must_exist: bool = False,
          legacy: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Check that `out` is `kind`'s (see `check`), create and mark it when new, and hold its lock until the
    block ends; yields the resolved path. See the module's docstring for the rules."""
    out = Path(out)
    check(out, kind, must_exist=must_exist, legacy=legacy)  # refuse a foreign directory before touching it
    path = out.resolve()
    if not is_main_process():
        yield path
        return
    shown = _shown(out, path)
    created = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    lock, marked = _Lock(path, shown, kind), False
    try:
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            if check(out, kind, must_exist=must_exist, legacy=legacy):  # again, under the lock
                write_json(path / MARKER, {"kind": kind, "created": _now()})
                marked = True
        except OSError as e:
            raise TetherError(f"cannot write to {shown}: {e.strerror or e}") from None
        yield path
    except BaseException:
        if lock.fd is not None and (marked or created) and set(os.listdir(path)) <= {MARKER, LOCK}:
            (path / MARKER).unlink(missing_ok=True)  # nothing was written: undo the claim
            lock.release()
        for p in created:  # only empty ones go
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    finally:
        lock.release()


def claiming(kind: str, param: str, legacy: Callable[[Path], bool] | None = None):
    """Decorator: the directory the function gets as argument `param` is claimed for `kind` while it runs."""

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def claimed(*args, **kwargs):
            with claim(signature.bind(*args, **kwargs).arguments[param], kind, legacy=legacy):
                return fn(*args, **kwargs)

        return claimed

    return wrap


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


@dataclasses.dataclass
class _Lock:
    """OUT/.tether-lock: a JSON record of the holder, and an exclusive flock held on it while claimed."""

    path: Path  # the directory
    shown: str
    kind: str
    fd: int | None = None

    @property
    def file(self) -> Path:
        return self.path / LOCK

    def acquire(self) -> None:
        for _ in range(10):  # retried only when the file was replaced while we opened it
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise TetherError(self._in_use(self._holder(fd))) from None
                    except OSError:  # a file system without flock: the pid in the file is the guard
                        pass
                    try:
                        same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
                    except FileNotFoundError:
                        same = False
                    if not same:  # its holder removed it between our open and flock: take the new one
                        os.close(fd)
                        continue
                self._take_over(fd, self._holder(fd))
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
            return
        raise TetherError(f"{self.shown}: could not take {LOCK} (other processes keep replacing it)")

    def _holder(self, fd: int) -> dict:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", "replace")
        try:
            holder = json.loads(text) if text.strip() else {}
        except ValueError:
            holder = {}
        return holder if isinstance(holder, dict) else {}

    def _in_use(self, holder: dict) -> str:
        if not holder:
            return f"{self.shown} is in use by another tether process; wait for it or choose another --out"
        return (f"{self.shown} is in use by tether {holder.get('kind', '?')} (pid {holder.get('pid')} on "
                f"{holder.get('host')} since {holder.get('since', '?')}); wait for it to end or choose "
                f"another --out (if no such process is running, delete {self.file})")

    def _take_over(self, fd: int, holder: dict) -> None:
        """Refuse a holder that may still run; report a dead one; then write ourselves into the file."""
        pid, host = holder.get("pid"), holder.get("host")
        if isinstance(pid, int) and pid != os.getpid():
            if host != socket.gethostname():
                raise TetherError(f"{self.shown} is locked by pid {pid} on {host}, which this machine cannot "
                                  f"check; if that run has ended, delete {self.file}")
            if _alive(pid):
                raise TetherError(self._in_use(holder))
            log.warning("%s: taking over the stale lock of tether %s (pid %d on %s since %s), which is no "
                        "longer running", self.shown, holder.get("kind", "?"), pid, host,
                        holder.get("since", "?"))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "kind": self.kind, "since": _now()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)

    def release(self) -> None:
        """Remove the lock file (still holding the flock, so no one takes a file that is going away)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self.fd).st_ino == os.stat(self.file).st_ino:
                self.file.unlink()
        os.close(self.fd)
        self.fd = None


# -------------------------------------------------------------------------------------------- legacy layouts


def made_by_config(cls: type, among: Iterable[type] = (), provenance_key: str = "provenance"
                   ) -> Callable[[Path], bool]:
    """A pre-marker directory of a training stage (or `tether run`): OUT/config.yaml is a mapping with the
    provenance block `dump_config` writes, and its other top-level keys are fields of the config dataclass
    `cls` (a key added since may be missing) and of no class in `among` with fewer fields (SFT's keys are all
    RM keys too: the closest fit owns the directory)."""

    def names(c: type) -> set[str]:
        return {f.name for f in dataclasses.fields(c)}

    fields, others = names(cls), [names(c) for c in among if c is not cls]

    def recognise(path: Path) -> bool:
        try:
            doc = yaml.safe_load((path / "config.yaml").read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return False
        if not (isinstance(doc, dict) and isinstance(doc.get(provenance_key), dict)):
            return False
        keys = set(doc) - {provenance_key}
        closer = any(keys <= other and len(other) < len(fields) for other in others)
        return bool(keys) and keys <= fields and not closer

    return recognise


def holds_only(names: Iterable[str], summary: Callable[[dict], bool] | None = None) -> Callable[[Path], bool]:
    """A pre-marker output directory: every entry is one of `names` (a hidden `.NAME.tmp` of an interrupted
    atomic write included), and, with `summary`, OUT/summary.json exists and `summary(its JSON)` is true."""
    names = set(names)

    def recognise(path: Path) -> bool:
        for p in path.iterdir():
            tmp = p.name.startswith(".") and p.name.endswith(".tmp") and p.name[1:-4] in names
            if p.name not in names and p.name not in CLAIM_FILES and not tmp:
                return False
        if summary is None:
            return True
        try:
            doc = json.loads((path / "summary.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and bool(summary(doc))

    return recognise


# ------------------------------------------------------------------------------------------- replacing files


def install(path: Path, staged: Path) -> list[str]:
    """Move the files of the directory `staged` into the claimed directory `path`, replacing the output an
    earlier run of the same command recorded in the marker ("files"), and record the new names; `staged` is
    removed. A file of the same name that tether did not record (the user's) is refused, not overwritten."""
    marker = read_marker(path) or {}
    old = set(marker.get("files", []))
    new = sorted(p.name for p in staged.iterdir())
    clash = [n for n in new if (path / n).exists() and n not in old]
    if clash:
        raise TetherError(f"{path / clash[0]} was not written by tether {marker.get('kind')}; move it away")
    marker["files"] = sorted(old | set(new))  # a crash half-way still knows every file it may have left
    write_json(path / MARKER, marker)
    for name in sorted(old - set(new)):
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()
    for name in new:
        os.replace(staged / name, path / name)
    staged.rmdir()
    marker["files"] = new
    write_json(path / MARKER, marker)
    return new
