"""The command line's overrides as Hydra's grammar reads them, before anything is composed.

:func:`check_overrides` refuses overrides Hydra cannot parse (with the quoting that makes them
parse), paths too long for the file system and an ``env.name`` that cannot name a run dir.
:func:`sweep_jobs` expands a ``-m`` sweep into its jobs as Hydra's basic sweeper would (for a large
sweep, a set of jobs that holds every swept value); :func:`override_of` and :func:`value_of`
find an override of a key as it was written.

Imports neither torch nor MuJoCo.
"""

from __future__ import annotations

import itertools
import math
import shlex

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from locomo.config.rules import validate_env_name
from locomo.errors import ConfigError
from locomo.launch import FLAGS_WITH_VALUE
from locomo.paths import check_path

# Keys whose values are files or folders (of any command): a value too long for a path is refused
# naming its key, before anything opens it (the OS would say "File name too long" from deep inside
# Hydra or pathlib, as a traceback).
PATH_KEYS = (
    "checkpoint",
    "resume",
    "output",
    "output_dir",
    "out",
    "runs",
    "env.xml_file",
    "logger.metrics_file",
    "bench.out",
    "hydra.run.dir",
    "hydra.sweep.dir",
)


def _unparsable(arg: str, exc: Exception) -> ConfigError:
    """An override Hydra's grammar refuses, as one line with the quoting that makes it parse.

    The common case is a path with '=' in it (``checkpoint=runs/lr=0.1/last.pt``): Hydra reads
    the second '=' as a syntax error. Quoted, the value is taken whole.
    """
    key, _, value = arg.partition("=")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    inner = '"' if '"' not in value else "'"  # Hydra's quotes, then the shell's around it all
    quoted = shlex.quote(f"{key}={inner}{value}{inner}")
    if "=" in value:
        advice = (
            f"a value with '=' in it must be quoted for Hydra: {quoted} (the outer quotes are the shell's)"
        )
    else:
        advice = (
            f"quote a value with special characters, e.g. {quoted} (the outer quotes are the shell's; "
            "grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)"
        )
    return ConfigError(key, value, f"Hydra cannot parse this override ({reason}); {advice}")


def check_overrides(args: list[str]) -> None:
    """Refuse, in one line each, overrides Hydra cannot parse (it would print its grammar error
    over several lines), paths too long for the file system, and an ``env.name`` that cannot name
    the run dir (Hydra would fail creating ``outputs/<env.name>/...`` with a traceback)."""
    parser = OverridesParser.create()
    flag_value = False
    for arg in args:
        if flag_value or arg in FLAGS_WITH_VALUE:
            flag_value = not flag_value
            continue
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
        except HydraException as exc:
            raise _unparsable(arg, exc) from exc
        key = override.key_or_group
        if key not in PATH_KEYS and key != "env.name":
            continue
        try:  # a sweep (-m key=a,b): each of its values
            values = (
                list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
            )
        except HydraException:
            values = []
        for value in values:
            if value is None:
                continue
            if key == "env.name":
                validate_env_name(value)
            else:
                check_path(key, str(value))


# A sweep's jobs composed and checked before Hydra starts, at most (each costs a composition, as
# Hydra's own of the job); a larger sweep: that many jobs in which each value of each swept key
# appears as far as they hold them all (its other jobs are checked when they start).
MAX_CHECKED_JOBS = 64


def _parsed(overrides: list[str]) -> list[tuple[str, Override | None]]:
    """Each override with Hydra's parse of it (None where it does not parse)."""
    parser = OverridesParser.create()
    out: list[tuple[str, Override | None]] = []
    for text in overrides:
        try:
            out.append((text, parser.parse_override(text)))
        except HydraException:
            out.append((text, None))
    return out


def override_of(overrides: list[str], key: str) -> str | None:
    """The last override that sets ``key`` (a config key or group), as written."""
    found = [text for text, o in _parsed(overrides) if o is not None and o.key_or_group == key]
    return found[-1] if found else None


def value_of(text: str | None) -> str:
    """The value of an override as written (after its first '=')."""
    return text.split("=", 1)[1] if text and "=" in text else ""


def sweep_jobs(overrides: list[str]) -> tuple[list[str], list[tuple[int, list[str]]], int] | None:
    """For ``-m`` with ``overrides``: Hydra's own overrides (``hydra.*``, every job has them), the
    jobs to check now (number, task overrides), and how many the sweep has; None for a sweep only
    Hydra can expand (glob, interval, another sweeper).

    A job's task overrides are those Hydra's basic sweeper gives it (``BasicSweeper.split_arguments``:
    the product of the swept values, the first override varying slowest).
    """
    parsed = _parsed(overrides)
    if any(o is None for _, o in parsed):
        return None
    hydra_args = [text for text, o in parsed if o is not None and o.is_hydra_override()]
    if any(
        o is not None and o.key_or_group.startswith(("hydra/sweeper", "hydra.sweeper")) for _, o in parsed
    ):
        return None
    lists: dict[str, list[str]] = {}  # key (as written, '+' included) -> its job overrides
    for _, o in parsed:
        if o is None or o.is_hydra_override():
            continue
        key = o.get_key_element()
        try:
            if o.is_sweep_override():
                if not o.is_discrete_sweep():
                    return None
                lists[key] = [f"{key}={value}" for value in o.sweep_string_iterator()]
            else:
                lists[key] = [f"{key}={o.get_value_element_as_str()}"]
        except HydraException:  # glob(...) needs the config's groups: Hydra expands it
            return None
    choices = list(lists.values())
    total = math.prod(len(c) for c in choices)
    if total <= MAX_CHECKED_JOBS:
        picks = list(itertools.product(*(range(len(c)) for c in choices)))
    else:  # the i-th value of each key (cycling), so that every value is in a job checked
        longest = max(len(c) for c in choices)
        picks = [tuple(i % len(c) for c in choices) for i in range(min(longest, MAX_CHECKED_JOBS))]
    jobs = []
    for pick in picks:
        number = 0
        for index, values in zip(pick, choices, strict=True):
            number = number * len(values) + index
        jobs.append((number, [values[i] for i, values in zip(pick, choices, strict=True)]))
    return hydra_args, jobs, total
