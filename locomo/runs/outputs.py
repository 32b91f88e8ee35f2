"""Where commands write, and the one check every written file goes through.

An output never destroys what it does not own. Every command that writes a file (``eval``'s
JSON, ``export``'s policy, ``render``'s and ``replay``'s videos and sheets, ``plot``'s figure,
``bench.out``, ``variance``'s table) calls :func:`safe_output` on the path *before any work*:

- the name must end in the suffix of what is written (``.mp4`` video, ``.png`` figure, ``.json``
  report, the export format's suffix), so a typo such as ``output=last.pt`` is one line, not a
  library's message after minutes of rollouts;
- an existing directory where a file is expected, or a parent that is a file or not writable, is
  one line;
- a run's own records (anything under ``checkpoints/`` or ``.hydra/``, ``config.yaml``, the
  metrics file, Hydra's log, the lock) are never replaced, and the files shipped in the package's
  ``assets/`` (also reached through the checkout's top-level ``assets`` link: paths are resolved)
  only with ``overwrite=true`` and only by a file of the same kind.

Then :func:`atomic_output` writes it: into a temporary file in the same directory, renamed over
the target at the end, so an interrupted write (Ctrl-C, a full disk) leaves the earlier file as it
was, and a target that is a hard link to another file (``last.pt`` and ``iter_N.pt``) is replaced
as a directory entry, never written through.

Without an explicit path, a command writes into the run directory it was given, or, for a policy
that has none (the shipped walker), into ``outputs/<command>/<time>/`` (:func:`command_output_dir`).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from locomo.errors import ConfigError
from locomo.paths import ASSETS_DIR, RUN_RECORD_DIRS, RUN_RECORD_FILES

# kind -> (the suffixes its file may have, what it is, in words)
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "video": ((".mp4",), "an H.264 video"),
    "figure": ((".png",), "a PNG image"),
    "json": ((".json",), "a JSON report"),
    "checkpoint": ((".pt",), "a policy file"),  # locomo export format=checkpoint
    "torchscript": ((".ts", ".pt"), "a TorchScript file"),
    "onnx": ((".onnx",), "an ONNX file"),
}


def _kind_of_existing(path: Path) -> str | None:
    """The kind an existing file has by its name (``.pt`` shipped files are policies)."""
    for kind, (suffixes, _) in KINDS.items():
        if path.name.endswith(suffixes):
            return kind
    return None


def _run_metrics_file(run_dir: Path) -> str:
    """The metrics file name a run's ``config.yaml`` names (``metrics.jsonl`` when unreadable)."""
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        name = cfg["logger"]["metrics_file"]
        return name if isinstance(name, str) and name else "metrics.jsonl"
    except Exception:  # no config, not YAML, another layout: the default name
        return "metrics.jsonl"


def is_run_dir(directory: Path) -> bool:
    """True when ``directory`` holds a locomo training run (its checkpoints, or config + metrics)."""
    checkpoints = directory / "checkpoints"
    return (checkpoints.is_dir() and any(checkpoints.glob("*.pt"))) or (
        (directory / "config.yaml").is_file() and (directory / _run_metrics_file(directory)).is_file()
    )


def run_record(path: Path) -> tuple[Path, str] | None:
    """(run dir, what it is) when ``path`` (resolved) is one of a training run's own records."""
    real = path.expanduser().resolve()
    for run in real.parents:
        if not is_run_dir(run):
            continue
        parts = real.relative_to(run).parts
        if parts[0] in RUN_RECORD_DIRS and len(parts) > 1:
            return run, f"inside the {parts[0]}/ folder"
        if len(parts) == 1 and parts[0] in (*RUN_RECORD_FILES, _run_metrics_file(run)):
            return run, f"the {parts[0]}"
        return None  # the nearest run decides: its eval/, render/ ... are outputs, not records
    return None


def _unwritable(path: Path) -> str | None:
    """Why ``path``'s folder cannot be created or written in, or None."""
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link where a folder must go
            return f"{existing} is a broken symbolic link"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def safe_output(value: str | Path, kind: str, key: str, overwrite: bool = False) -> Path:
    """``value`` as the path of a ``kind`` file (a key of :data:`KINDS`) that a command may write.

    ConfigError (one line naming ``key``) for a wrong suffix, an existing directory, a folder that
    cannot be written, a run's own record (never replaced), or a shipped asset (replaced only with
    ``overwrite`` and by a file of the same kind). Call it before any work; nothing is written.
    """
    text = str(value)
    suffixes, what = KINDS[kind]
    if not text.strip():
        raise ConfigError(key, text, f"it is empty; give a {' or '.join(suffixes)} file, or leave {key} out")
    path = Path(text).expanduser()
    if path.is_dir():
        example = path / f"<name>{suffixes[0]}"
        raise ConfigError(key, text, f"it is a directory; give a file path in it, e.g. {key}={example}")
    if not path.name.endswith(suffixes) or path.name in suffixes:
        raise ConfigError(key, text, f"must be a {' or '.join(suffixes)} file ({what})")
    problem = _unwritable(path)
    if problem is not None:
        raise ConfigError(key, text, f"cannot write there ({problem}); choose another path")
    record = run_record(path)
    if record is not None:
        run, which = record
        raise ConfigError(
            key, text, f"it is {which} of the training run {run}, which no command replaces; write elsewhere"
        )
    real = path.resolve()
    if real.exists() and real.is_relative_to(ASSETS_DIR.resolve()):
        same = _kind_of_existing(real) == kind
        if not (overwrite and same):
            how = (
                "write elsewhere, or add overwrite=true to replace it"
                if same
                else f"write elsewhere (it is not {what}, so overwrite=true does not replace it)"
            )
            raise ConfigError(key, text, f"it is {real}, a file shipped with locomo; {how}")
    return path


def safe_output_dir(value: str | Path, key: str) -> Path:
    """``value`` as a folder a command writes several files into: not a file, writable, not
    inside a run's records; ConfigError naming ``key`` otherwise."""
    text = str(value)
    if not text.strip():
        raise ConfigError(key, text, f"it is empty; give a folder, or leave {key} out")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(key, text, "it is a file, not a folder; give a folder")
    problem = _unwritable(path / "x")
    if problem is not None:
        raise ConfigError(key, text, f"cannot write there ({problem}); choose another folder")
    record = run_record(path / "x")
    if record is not None:
        raise ConfigError(key, text, f"it is {record[1]} of the training run {record[0]}; write elsewhere")
    return path


def command_output_dir(command: str) -> Path:
    """``outputs/<command>/<time>/`` (not created), unique: a suffix when that second's is taken."""
    base = Path("outputs") / command / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}_{n}")
    return out


def _new_file_mode(path: Path) -> int:
    """The permission bits the written file gets: the old file's, else what ``open`` would give."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that go by the name still work);
    when the block ends normally it replaces ``path`` in one rename, otherwise it is removed and
    ``path`` stays as it was (Ctrl-C, a full disk, a failed check)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _new_file_mode(path))
        with tmp.open("rb") as f:  # on disk before the rename: a crash leaves the old file or the new
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` afterwards, or (on any failure) what it held before."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class OutputInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM/SIGHUP) while a command wrote its files: says what is on disk.

    ``locomo.cli.main`` prints it as one line with the original signal's exit status.
    """

    def __init__(self, cause: KeyboardInterrupt, written: list[Path], where: Path | None) -> None:
        self.exit_status = int(getattr(cause, "exit_status", 130))
        head = str(cause) or "interrupted"
        place = f" in {where}" if where is not None else ""
        super().__init__(
            f"{head}; {len(written)} file(s) finished{place}; the file being written was dropped and "
            "an earlier file of its name is kept as it was"
        )
