"""Hydra's composition of a command line, checked before Hydra's app runs: a typo is one line.

:func:`check_overrides` refuses overrides Hydra cannot parse (with the quoting that makes them
parse), paths too long for the file system and an ``env.name`` that cannot name a run dir.
:func:`check_composition` composes the command's config with the overrides by Hydra's compose
API, as its app would (with ``-m``, each job of the sweep, or for a large sweep a set of jobs that
holds every swept value), and turns Hydra's error into one :class:`~locomo.config.ConfigError`:
the key or group option and its value, what is wrong, and the closest keys or options
(did-you-mean). The CLI (:func:`locomo.cli.main`) runs both, then exits 2 with that line.

Imports neither torch nor MuJoCo.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import itertools
import math
import re
import shlex
from collections.abc import Callable
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import BooleanNode, DictConfig, FloatNode, IntegerNode, ListConfig, OmegaConf, StringNode
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from locomo.config_rules import resolve_total_steps, validate_env_name
from locomo.errors import ConfigError, interrupt_behind
from locomo.launch import FLAGS_WITH_VALUE, split_command_line
from locomo.paths import CONF_DIR, check_path
from locomo.validation import validate_bench, validate_config

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


class KeyOnlyError(ConfigError):
    """A :class:`ConfigError` about an override without a value (``~key``): ``<override> is invalid: ...``."""

    def __init__(self, override: str, allowed: str) -> None:
        self.key, self.value, self.allowed = override, None, allowed
        ValueError.__init__(self, f"{override} is invalid: {allowed}")


# Flags after which Hydra composes no config to run (help, info, shell completion), or composes
# another config than the command's (which the pre-compose cannot know): no pre-compose then.
_NO_PRECOMPOSE = (
    "-h",
    "--help",
    "--hydra-help",
    "-i",
    "--info",
    "-sc",
    "--shell-completion",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
    "--experimental-rerun",
)
# A sweep's jobs composed and checked before Hydra starts, at most (each costs a composition, as
# Hydra's own of the job); a larger sweep: that many jobs in which each value of each swept key
# appears as far as they hold them all (its other jobs are checked when they start).
MAX_CHECKED_JOBS = 64
# Suggestions for a typo'd key, at most.
_SUGGESTIONS = 3


def _compose(config_name: str, overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """``conf/<config_name>.yaml`` composed with ``overrides`` by Hydra's compose API, as its app
    composes it (a job of a sweep: with that job's overrides). Hydra's exceptions pass through.

    A Hydra instance this process already holds (a caller's app) is put back afterwards.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    outer = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), job_name=config_name, version_base=None):
            return compose(config_name=config_name, overrides=overrides, return_hydra_config=with_hydra)
    finally:
        GlobalHydra.instance().hydra = outer  # the context restored a copy of the state before: cleared


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


def _override_of(overrides: list[str], key: str) -> str | None:
    """The last override that sets ``key`` (a config key or group), as written."""
    found = [text for text, o in _parsed(overrides) if o is not None and o.key_or_group == key]
    return found[-1] if found else None


def _value_of(text: str | None) -> str:
    """The value of an override as written (after its first '=')."""
    return text.split("=", 1)[1] if text and "=" in text else ""


def _base_config(config_name: str, overrides: list[str], without: str | None) -> DictConfig | None:
    """The config (with Hydra's) without the override that failed, to read keys and types from."""
    for attempt in ([o for o in overrides if o != without], []):
        try:
            return _compose(config_name, attempt, with_hydra=True)
        except (HydraException, OmegaConfBaseException):
            continue
    return None


def _node(cfg: DictConfig, key: str) -> Any:
    """The node at dotted ``key`` (no interpolation resolved), or None."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return None
        node = node._get_node(part)
    return node


def _dotted_keys(tree: Any, prefix: str = "") -> list[str]:
    """Every key of a plain nested dict, dotted, sections and leaves."""
    keys: list[str] = []
    if isinstance(tree, dict):
        for name, sub in tree.items():
            key = f"{prefix}{name}"
            keys.append(key)
            keys += _dotted_keys(sub, f"{key}.")
    return keys


def _best(word: str, names: list[str], cutoff: float) -> list[str]:
    """The names most like ``word``: at most :data:`_SUGGESTIONS`, only those about as close as the
    closest (a clear match comes alone), none below ``cutoff``."""
    scored = sorted(((difflib.SequenceMatcher(None, word, n).ratio(), n) for n in names), key=lambda t: -t[0])
    if not scored or scored[0][0] < cutoff:
        return []
    return [n for ratio, n in scored if ratio >= max(cutoff, scored[0][0] - 0.1)][:_SUGGESTIONS]


def _closest(key: str, keys: list[str]) -> list[str]:
    """The keys closest to ``key``: those of its name in other sections (``algo.iterations``), else
    the closest in its section, when that exists (``train.iteratons``), else by the whole dotted
    name (``traing.iterations``), else by the last part (``iteratons``)."""
    parent, _, last = key.rpartition(".")
    by_last: dict[str, list[str]] = {}
    for k in keys:
        by_last.setdefault(k.rpartition(".")[2], []).append(k)
    if last in by_last:  # the right name in the wrong section (algo.iterations)
        return by_last[last][:_SUGGESTIONS]
    if parent in keys:  # the section is right: the typo is in the name (the shared prefix says nothing)
        names = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
        close = [names[n] for n in _best(last, list(names), 0.6)]
    else:
        close = _best(key, keys, 0.75)
    if close:
        return close
    names_close = _best(last, list(by_last), 0.75)  # the right name in another section, or none
    return [k for name in names_close for k in by_last[name]][:_SUGGESTIONS]


def _listed(names: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _ranked(value: str, options: list[str]) -> list[str]:
    """``options``, the closest to ``value`` first."""
    return sorted(options, key=lambda o: -difflib.SequenceMatcher(None, value, o).ratio())


def _as_override_value(value: Any) -> str:
    """A value as it is written on the command line (``true``, ``null``, ``[64,64]``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_as_override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_as_override_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _expected(node: Any) -> str | None:
    """What a node of the config accepts, in words (None when locomo cannot tell)."""
    if isinstance(node, ListConfig):
        element = getattr(node._metadata, "element_type", None)
        kinds = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        what = f"a list of {kinds[element]}" if element in kinds else "a list"
        words = f"{what} in brackets"
    elif isinstance(node, DictConfig):
        words = "a mapping in braces ({key:value,...})"
    else:
        kinds = {IntegerNode: "an integer", FloatNode: "a number", BooleanNode: "true or false"}
        words = next((w for kind, w in kinds.items() if isinstance(node, kind)), None)
        if words is None:
            words = "a string" if isinstance(node, StringNode) else None
    if words is None:
        return None
    return f"{words}, or null" if node._is_optional() else words


def _one_line(exc: BaseException) -> str:
    """Hydra's message (and its cause's) as one line, without the lines that only locate it."""
    noise = ("full_key:", "object_type", "reference_type", "Config search path", "provider=", "Set the env")
    lines = []
    for error in (exc, exc.__cause__):
        if error is not None:
            lines += [line.strip() for line in str(error).splitlines()]
    kept = [line for line in lines if line and not line.startswith(noise)]
    return " ".join(kept) or type(exc).__name__


def _unknown_key(
    key: str, text: str | None, command: str, config_name: str, overrides: list[str]
) -> ConfigError:
    """An override of a key the config does not have: the closest keys it has, or, under a field
    that is open to new keys (``env.kwargs``, ``env.reward_scales``), how to add it."""
    app = f"locomo {command}"
    value = _value_of(text)
    base = _base_config(config_name, overrides, text)
    if base is None:
        return ConfigError(key, value, f"not a key of {app}; {app} --help lists its keys")
    parent, _, last = key.rpartition(".")
    section = _node(base, parent) if parent else None
    if isinstance(section, DictConfig) and OmegaConf.get_type(section) is dict:
        add = shlex.quote(f"+{text or f'{key}={value}'}")
        siblings = [f"{parent}.{k}" for k in section]
        close = _best(key, siblings, 0.75)
        if close:
            return ConfigError(
                key,
                value,
                f"{parent} has no key {last}; did you mean {_listed(close)}? (a new key is added with {add})",
            )
        return ConfigError(key, value, f"{parent} has no key {last} yet; add it with {add}")
    tree = OmegaConf.to_container(base, resolve=False)
    assert isinstance(tree, dict)
    if not key.startswith("hydra"):
        tree.pop("hydra", None)
    close = _closest(key, _dotted_keys(tree))
    if close:
        return ConfigError(
            key,
            value,
            f"not a key of {app}; did you mean {_listed(close)}? ({app} --help lists its keys)",
        )
    return ConfigError(key, value, f"not a key of {app}; {app} --help lists its keys")


def _composition_error(exc: Exception, command: str, config_name: str, overrides: list[str]) -> ConfigError:
    """Hydra's error composing ``config_name`` with ``overrides`` as locomo's one line: the key
    or group option and its value, what is wrong and what to do."""
    app = f"locomo {command}"
    message, cause = str(exc), exc.__cause__
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        text = _override_of(overrides, group)
        value = _value_of(text) if text is not None else option
        choices = ", ".join(_ranked(option, list(exc.options)))
        return ConfigError(
            group, value, f"not one of the {group} options; choose one of {choices} (closest first)"
        )
    found = re.match(r"Could not override '([^']+)'", message)
    if found and isinstance(cause, ConfigKeyError | ConfigAttributeError):
        key = found.group(1)
        return _unknown_key(key, _override_of(overrides, key), command, config_name, overrides)
    found = re.match(r"Could not delete from config\. '([^']+)' does not exist", message)
    if found:
        key = found.group(1)
        base = _base_config(config_name, overrides, _override_of(overrides, key))
        tree = OmegaConf.to_container(base, resolve=False) if base is not None else {}
        close = [k for k in _closest(key, _dotted_keys(tree)) if not k.startswith("hydra")]
        listed = f"{app} --help lists its keys"
        if close:
            listed = f"did you mean {_listed(['~' + k for k in close])}? ({listed})"
        return KeyOnlyError(f"~{key}", f"there is no key {key} to delete; {listed}")
    found = re.match(r"(\S+) appears more than once in the final defaults list", message)
    if found:
        group = found.group(1)
        text = _override_of(overrides, group) or group
        value = _value_of(text)
        return ConfigError(
            f"+{group}",
            value,
            f"{group} is chosen in the config already; choose it without '+' ({group}={value})",
        )
    found = re.match(r"Could not append to config\. An item is already at '([^']+)'", message)
    if found:
        key = found.group(1)
        text = _override_of(overrides, key) or key
        value = _value_of(text)
        return ConfigError(
            f"+{key}",
            value,
            f"{key} is in the config already; set it without '+' ({shlex.quote(f'{key}={value}')})",
        )
    found = re.match(r"Error merging override (.+)", message)
    if found and isinstance(cause, ValidationError):
        text = found.group(1).strip()
        key = re.sub(
            r"\[\d+\]$", "", str(getattr(cause, "full_key", "") or text.split("=", 1)[0].lstrip("+~"))
        )
        value = _value_of(text)
        base = _base_config(config_name, overrides, text)
        node = _node(base, key) if base is not None else None
        expected = _expected(node) if node is not None else None
        if expected is None:
            return ConfigError(key, value, f"{_one_line(cause)}; {app} --help says what each key takes")
        now = _as_override_value(
            OmegaConf.to_container(node) if isinstance(node, DictConfig | ListConfig) else node._value()
        )
        return ConfigError(
            key, value, f"must be {expected}; e.g. {key}={now} (its value without this override)"
        )
    found = re.match(r"Ambiguous value for argument '([^=']+)=", message)
    if found:
        key = found.group(1)
        text = _override_of(overrides, key) or key
        value = _value_of(text)
        quoted = shlex.quote(f'{key}="{value}"')
        return ConfigError(
            key,
            value,
            f"a value with ',' is a sweep; add -m to run one job per value ({app} -m {text}), or write "
            f"a list as {key}=[{value}], or a string in quotes: {quoted}",
        )
    return ConfigError(
        "overrides",
        " ".join(overrides),
        f"Hydra cannot compose the config ({_one_line(exc)}); {app} --help lists its keys",
    )


def _compose_or_refuse(command: str, config_name: str, overrides: list[str]) -> DictConfig:
    """The composed config, or the one-line :class:`ConfigError` of why it cannot be composed."""
    try:
        return _compose(config_name, overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        interrupt = interrupt_behind(exc)
        if interrupt is not None:  # Ctrl-C inside the composition, wrapped as its failure
            raise interrupt from None
        raise _composition_error(exc, command, config_name, overrides) from exc


def _sweep_jobs(overrides: list[str]) -> tuple[list[str], list[tuple[int, list[str]]], int] | None:
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


def _check_train_job(cfg: DictConfig, overrides: list[str]) -> None:
    """What ``locomo train``'s job checks before anything else (:func:`locomo.commands.train.train`)."""
    if cfg.get("resume") is not None:  # the checkpoint's config: the resume checks it
        return
    cfg.env.xml_sha256 = None
    resolve_total_steps(cfg, overrides)
    validate_config(cfg)


# What each command's job checks first, on the composed config (run() of its module), for the
# jobs of a sweep: a sweep stops at its first refused job, so one is refused before any starts.
_JOB_CHECKS: dict[str, Callable[[DictConfig, list[str]], None]] = {
    "train": _check_train_job,
    "variance": lambda cfg, overrides: validate_config(cfg),
    "bench": lambda cfg, overrides: validate_bench(cfg),
}


def _refused_job(exc: ConfigError, number: int, total: int, job: list[str]) -> ConfigError:
    """``exc`` of one job of a sweep, saying which and that none was started."""
    shown = " ".join(job)
    return ConfigError(
        exc.key, exc.value, f"{exc.allowed} (sweep job #{number} of {total}: {shown}; no job was started)"
    )


def check_composition(command: str, config_name: str, args: list[str]) -> None:
    """Compose the command's config with the command line's overrides once, before Hydra's app
    runs, so that an unknown key or group option, or a value of the wrong type, is one line and
    exit 2 (:class:`ConfigError`) instead of Hydra's message over several lines and exit 1.

    With ``-m``, each job of the sweep (or, for a large one, a set of jobs that holds every
    swept value) is composed, and checked as its job would check it first: a sweep stops at its
    first refused job, so it is refused before any job starts and leaves nothing behind.
    Overrides Hydra handles itself pass unchanged: ``hydra.*``, ``+key``, ``++key``, ``~key``.
    """
    flags, overrides = split_command_line(args)
    if not overrides or any(flag.split("=", 1)[0] in _NO_PRECOMPOSE for flag in flags):
        return  # nothing to check (the defaults compose), or nothing that runs the command's config
    multirun = (
        "-m" in flags
        or "--multirun" in flags
        or any(o.replace(" ", "").upper() == "HYDRA.MODE=MULTIRUN" for o in overrides)
    )
    if not multirun:
        _compose_or_refuse(command, config_name, overrides)
        return
    sweep = _sweep_jobs(overrides)
    if sweep is None:
        return
    hydra_args, jobs, total = sweep
    check = _JOB_CHECKS.get(command)
    for number, job in jobs:
        try:
            cfg = _compose_or_refuse(command, config_name, [*hydra_args, *job])
            if check is not None:
                try:  # its warnings are the job's to print, once
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        check(cfg, job)
                except ConfigError:
                    raise
                except Exception:  # not a bad value: the job reports it as it does now
                    pass
        except ConfigError as exc:
            raise (exc if total == 1 else _refused_job(exc, number, total, job)) from exc
