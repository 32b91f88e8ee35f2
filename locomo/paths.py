"""Where locomo's files are: the package's configs and assets, a run directory's layout, and the
env's model file (an MJCF path as given, pinned when a run starts, and checked by its hash).

Light on purpose (no torch, no MuJoCo): the command line's checks use it before anything heavy loads.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig

from locomo.errors import ConfigError, shown

PACKAGE_DIR = Path(__file__).resolve().parent
# Inside the package, so that a wheel carries them (the repository's top-level conf/ and assets/
# are links here, for people who browse or edit from a checkout).
CONF_DIR = PACKAGE_DIR / "conf"
ASSETS_DIR = PACKAGE_DIR / "assets"

# ---------------------------------------------------------------------------------------------
# A run directory

# What a locomo run writes into its run dir, and all that ``overwrite=true`` may remove: files of
# these names at the top (the metrics file, and its ``.damaged`` rows, are added from the config),
# and in these folders the files that match these patterns (a user's own ``videos/holiday.mp4``
# or ``eval/results.json`` is kept). Hydra's train.log is kept: Hydra has already opened it for
# this run when the job starts.
RUN_TOP_FILES = ("config.yaml", "traceback.log", "behavior.png")
RUN_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("iter_*.pt", "last.pt", "nonfinite_*.pt", ".*.tmp"),
    ".hydra": ("config.yaml", "hydra.yaml", "overrides.yaml"),
    "videos": ("iter_*.mp4", ".*.tmp.mp4"),
    "wandb": ("offline-run-*", "run-*", "latest-run", "debug*.log"),
    "eval": ("*_seed*.json",),
    "render": ("*_seed*_*.mp4", "*_seed*_sheet.png"),
    "replay": ("*_replay_seed*.mp4",),
    "export": ("policy_*",),
}
# Every name a run uses at the top of its run dir: the above, Hydra's log of the job (hydra.job.name
# is train) and the run's lock. The metrics file must be none of them (locomo.config.rules.validate_logger).
RUN_DIR_NAMES = (*RUN_TOP_FILES, *RUN_FOLDERS, "train.log", ".lock")
# What a training run keeps in its run dir that no other command may replace: the folders (every
# file in them) and the single files (the metrics file is added from the run's config).
RUN_RECORD_DIRS = ("checkpoints", ".hydra", "wandb")
RUN_RECORD_FILES = ("config.yaml", "metrics.jsonl", "train.log", ".lock", "traceback.log")

# ---------------------------------------------------------------------------------------------
# Path lengths

# Linux's limits (limits.h): bytes in one file or folder name, and in a whole path. A longer one
# fails every file operation with "File name too long"; checked up front to say which key it is.
NAME_MAX = 255
PATH_MAX = 4096


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot be a path on this system (a name or the whole too long), else None."""
    encoded = os.fsencode(value)
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > NAME_MAX:
        return (
            f"a file or folder name in it has {longest} characters, and file systems allow {NAME_MAX}; "
            "give a path with shorter names"
        )
    if len(encoded) >= PATH_MAX:
        return (
            f"it has {len(encoded)} characters, and paths are limited to {PATH_MAX - 1}; give a shorter "
            "path (e.g. cd closer to it and give it relative to there)"
        )
    return None


def check_path(key: str, value: Any) -> None:
    """ConfigError (naming ``key``) when ``value`` is too long to be a path (:func:`path_problem`)."""
    if value is None:
        return
    problem = path_problem(str(value))
    if problem is not None:
        raise ConfigError(key, shown(str(value)), f"too long for a path: {problem}")


# ---------------------------------------------------------------------------------------------
# The env's model file


def resolve_xml_file(xml_file: str) -> Path:
    """Find an MJCF file: as given (absolute or relative to the working directory), else in assets/."""
    for candidate in (Path(xml_file).expanduser(), ASSETS_DIR / xml_file):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError("env.xml_file", xml_file, f"no such file (looked in {os.getcwd()} and {ASSETS_DIR})")


def _included_files(xml: Path) -> list[Path]:
    """The files an MJCF model ``<include>``s (recursively; MuJoCo reads each ``file`` relative to the
    main model's directory). An unreadable or unparsable XML includes nothing: MuJoCo reports it."""
    found: list[Path] = []
    todo = [xml]
    while todo:
        try:
            root = ET.parse(todo.pop()).getroot()
        except (OSError, ET.ParseError):
            continue
        for node in root.iter("include"):
            name = node.get("file")
            included = (xml.parent / name) if name else None
            if included is not None and included not in found:
                found.append(included)
                todo.append(included)
    return found


def model_sha256(xml: Path) -> str:
    """The sha256 of an MJCF model: of the file's bytes (what ``sha256sum`` prints) when it includes
    no other file, else of its bytes and those of each ``<include>``d file (meshes, textures and
    other assets a model names are not hashed). Raises OSError if a file cannot be read."""
    digest = hashlib.sha256(xml.read_bytes())
    included = _included_files(xml)
    if not included:
        return digest.hexdigest()
    for path in included:
        digest.update(b"\0" + os.path.relpath(path, xml.parent).encode())  # where it is, as MuJoCo reads it
        digest.update(b"\0" + (path.read_bytes() if path.is_file() else b"<missing>"))
    return digest.hexdigest()


class ModelFile(Protocol):
    """What these functions read of an env config (:class:`locomo.config.schema.EnvConfig`): its
    model file as given and, once pinned, that file's hash."""

    xml_file: str | None
    xml_sha256: str | None


def pin_xml_file(env: DictConfig | ModelFile) -> None:
    """When a run starts: ``env.xml_file`` as found now, and the model's hash (``env.xml_sha256``).

    A path as typed would be resolved again, against the working directory, by every resume, eval
    and render: another directory's file of the same name would be trained or evaluated on,
    silently. A model among the package's assets is stored by its name under assets/, so that a
    run stays usable on another machine or install (the hash still says if that model changed).
    """
    if env.xml_file is None:
        env.xml_sha256 = None
        return
    xml = resolve_xml_file(env.xml_file)
    assets = ASSETS_DIR.resolve()
    env.xml_file = str(xml.relative_to(assets)) if xml.is_relative_to(assets) else str(xml)
    env.xml_sha256 = model_sha256(xml)


def env_xml_path(env: DictConfig | ModelFile) -> Path:
    """The model file an env config builds: a pinned one (``env.xml_sha256`` set) is an absolute path
    or a name under assets/, never looked up in the working directory; else :func:`resolve_xml_file`."""
    assert env.xml_file is not None
    if getattr(env, "xml_sha256", None) is not None:
        path = Path(env.xml_file)
        return path if path.is_absolute() else ASSETS_DIR / path
    return resolve_xml_file(env.xml_file)


def pinned_model_problem(env: DictConfig | ModelFile) -> str | None:
    """Why a pinned model (see :func:`pin_xml_file`) cannot be used here, or None."""
    sha = getattr(env, "xml_sha256", None)
    if env.xml_file is None or sha is None:
        return None
    path = env_xml_path(env)
    where = f"env.xml_file={str(path)!r}, resolved when training started"
    if not path.is_file():
        return (
            f"its model file {where}, does not exist; put that model back at that path "
            "(the run can be used only with the model it was trained on)"
        )
    try:
        now = model_sha256(path)
    except OSError as exc:
        return f"its model file {where}, cannot be read ({exc.strerror or exc})"
    if now != sha:
        return (
            f"its model file {where}, has changed since (sha256 {sha[:12]}..., now {now[:12]}...); "
            "put back the model the run was trained on, or train a new run on the changed one"
        )
    return None
