"""What a command's job takes from its command line besides Hydra's config: one :class:`Launch`.

The CLI builds it once, before Hydra's app runs (``prepare(args)`` of the command's module, e.g.
:func:`locomo.commands.train.prepare`), and hands it to the job with the task function
(``run(cfg, launch)``, :func:`locomo.cli.run_hydra_app`). It holds:

- the command line as given (:attr:`Launch.args`);
- a resume's checkpoint, chosen and read once (:class:`Resume`);
- what locomo sets of Hydra's own config: the run dir (a resume's, or rank 0's for the other
  ranks of a torchrun job), Hydra's ``.hydra/`` record switched off because the job writes it
  itself once its start can no longer be refused (:attr:`Launch.record_subdir`), numbered job
  dirs for a sweep whose overrides make names too long;
- the folder below which a refused start removes what Hydra made (:attr:`Launch.created_below`).

Hydra's app still parses a command line (it creates the run dir, the job's log, a sweep's jobs):
:meth:`Launch.hydra_args` builds it, in one place, from these fields: the user's overrides, less
those of the keys locomo sets, and locomo's as ``key=value`` overrides.

Process boundaries. A sweep's launcher may run its jobs in other processes (joblib) or on other
machines (submitit): every Hydra launcher ships the task function to where the job runs, and the
:class:`Launch` goes with it (it is part of the function, and plain data). The ranks of a torchrun
job are processes of their own that each build their own :class:`Launch` from the same command
line; the one value they cannot derive alike, rank 0's run dir (Hydra's default is a timestamp),
rank 0 broadcasts over the process group (:func:`locomo.commands.train.follow_rank0`).

Imports only Hydra's override parser, so that the CLI stays light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

# Hydra's flags whose value is the next argument (which is never an override).
FLAGS_WITH_VALUE = (
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--shell-completion",
    "-sc",
    "--experimental-rerun",
)
# Hydra's flags that print something (the config, Hydra's info, help, a completion script) and
# exit without running the job: nothing is created for such a start.
PRINT_ONLY_FLAGS = (
    *("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"),
    *("--hydra-help", "--help", "-h"),
)


def split_command_line_positions(args: list[str] | tuple[str, ...]) -> list[int]:
    """Where in a command line Hydra's flags are, with the values of those that take one."""
    flags: list[int] = []
    flag_value = False
    for i, arg in enumerate(args):
        if flag_value or arg in FLAGS_WITH_VALUE:
            flag_value = not flag_value
            flags.append(i)
        elif arg.startswith("-"):
            flags.append(i)
    return flags


def split_command_line(args: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(Hydra's flags, with the values of those that take one; the overrides) of a command line."""
    flags = set(split_command_line_positions(args))
    return [a for i, a in enumerate(args) if i in flags], [a for i, a in enumerate(args) if i not in flags]


def quoted(value: str) -> str:
    """``value`` as a single-quoted Hydra override value, taken whole (a path with '=', ',' or
    spaces). In Hydra's grammar a backslash escapes only a quote, so quotes are escaped and the
    backslashes right before a quote (or the closing one) doubled."""
    inner = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    inner = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, inner)
    return f"'{inner}'"


@dataclass(frozen=True)
class Resume:
    """The checkpoint a ``resume=`` continues, chosen and read before Hydra's app runs
    (:func:`locomo.training.resume.resolve_resume`)."""

    path: Path  # the checkpoint file (absolute): the newest intact one of the run
    state: dict[str, Any]  # its contents (the loader's dict)
    run_dir: Path  # where the run goes on: the checkpoint's run dir, or a new one for a loose file
    in_place: bool  # True: in the checkpoint's own run dir (whose .hydra/ record stays as it is)


@dataclass(frozen=True)
class Launch:
    """One start of a command: its command line and what locomo decided from it before Hydra ran.

    The defaults are a command that leaves Hydra's run dir and record as the command line says
    (``eval``, ``render``, ...): :meth:`hydra_args` is then the command line itself.
    """

    args: tuple[str, ...] = ()  # the command line after the command, as given (flags and overrides)
    resume: Resume | None = None  # ``resume=``'s checkpoint; its path replaces the value given
    run_dir: str | None = None  # hydra.run.dir that locomo sets (a resume's, rank 0's); None: as given
    hydra_writes_record: bool = True  # False: hydra.output_subdir=null, the job writes the record
    record_subdir: str | None = None  # where in the run dir the job writes Hydra's record (None: nowhere)
    created_below: Path | None = None  # a refused start removes what Hydra made below it (None: keep all)
    sweep_subdir: str | None = None  # hydra.sweep.subdir that locomo sets (numbered job dirs)
    follower: bool = False  # a torchrun rank other than 0: no log of its own in rank 0's run dir

    @cached_property
    def overrides(self) -> list[tuple[str, Override | None]]:
        """Each override of the command line as written, with Hydra's parse (None: does not parse)."""
        return [(self.args[i], parse) for i, parse in self._parsed.items()]

    @cached_property
    def _parsed(self) -> dict[int, Override | None]:
        """Where in :attr:`args` each override is, and Hydra's parse of it (None: does not parse)."""
        parser = OverridesParser.create()
        flags = set(split_command_line_positions(self.args))
        out: dict[int, Override | None] = {}
        for i, text in enumerate(self.args):
            if i in flags:
                continue
            try:
                out[i] = parser.parse_override(text)
            except HydraException:
                out[i] = None
        return out

    @property
    def print_only(self) -> bool:
        """True when Hydra only prints (``--cfg job``, ``--info``, ...) and runs no job."""
        flags = set(split_command_line_positions(self.args))
        return any(self.args[i].split("=", 1)[0] in PRINT_ONLY_FLAGS for i in flags)

    @property
    def multirun(self) -> bool:
        """True when the command line asks Hydra for a sweep."""
        return "-m" in self.args or "--multirun" in self.args

    def given(self, key: str) -> str | None:
        """The value the command line gives ``key`` last (a string as Hydra reads it; other values
        as written, quotes stripped), or None when it gives none."""
        values = [(text, o) for text, o in self.overrides if o is not None and o.key_or_group == key]
        if not values:
            return None
        text, override = values[-1]
        value = override.value()
        return value if isinstance(value, str) else text.split("=", 1)[1].strip("'\"")

    def value(self, key: str) -> str | None:
        """The value Hydra's app gets for ``key`` (``hydra.run.dir``, ...): the one locomo sets
        (None for null), else the command line's (:meth:`given`)."""
        own = self._own()
        return own[key][0] if key in own else self.given(key)

    def _own(self) -> dict[str, tuple[str | None, str]]:
        """The overrides locomo sets: key -> (its value, that value in Hydra's grammar), task ones first."""
        own: dict[str, tuple[str | None, str]] = {}

        def path(value: Path | str) -> tuple[str, str]:
            return str(value), quoted(str(value))

        if self.resume is not None:
            own["resume"] = path(self.resume.path)
            own["hydra.run.dir"] = path(self.resume.run_dir)
            if self.resume.in_place:  # the run's original .hydra/ record stays as it was
                own["hydra.output_subdir"] = (None, "null")
        if self.run_dir is not None:
            own["hydra.run.dir"] = path(self.run_dir)
        if not self.hydra_writes_record:
            own["hydra.output_subdir"] = (None, "null")
        if self.sweep_subdir is not None:
            own["hydra.sweep.subdir"] = (self.sweep_subdir, self.sweep_subdir)
        if self.follower:
            own["hydra/job_logging"] = ("none", "none")
        return own

    def hydra_args(self) -> list[str]:
        """The command line Hydra's app parses: the one given, less the overrides of keys locomo
        sets, with locomo's right after the last override (argparse wants the overrides together,
        e.g. before or after ``--cfg job``)."""
        own = self._own()
        dropped = {i for i, o in self._parsed.items() if o is not None and o.key_or_group in own}
        at = max((i + 1 for i in self._parsed), default=len(self.args))
        added = [f"{key}={text}" for key, (_, text) in own.items()]
        before = [a for i, a in enumerate(self.args[:at]) if i not in dropped]
        return [*before, *added, *self.args[at:]]

    def task_overrides(self) -> list[str]:
        """The overrides of the job's config (not Hydra's: ``hydra.*``, ``hydra/*``) that Hydra's app
        gets, in order: the command line's, then locomo's (a resume's checkpoint)."""
        own = self._own()
        kept = [
            text
            for text, o in self.overrides
            if o is None or (o.key_or_group not in own and not o.is_hydra_override())
        ]
        return [*kept, *(f"{key}={text}" for key, (_, text) in own.items() if not key.startswith("hydra"))]
