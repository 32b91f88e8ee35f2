"""Hydra's error composing a command line, as locomo's one line: the key or group option and its
value, what is wrong, and the closest keys or options (did-you-mean).

:func:`composition_error` reads Hydra's exception (an unknown key or group option, a value of the
wrong type, a ``+`` or ``~`` that does not fit, an unquoted ``,``) and words it as one
:class:`~locomo.errors.ConfigError`; the suggestions come from the config composed without the
override that failed, which the caller composes (``base_config``).

Imports neither torch nor MuJoCo.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable
from typing import Any

from hydra.errors import MissingConfigException
from omegaconf import BooleanNode, DictConfig, FloatNode, IntegerNode, ListConfig, OmegaConf, StringNode
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from locomo.config.overrides import override_of, value_of
from locomo.errors import ConfigError


class KeyOnlyError(ConfigError):
    """A :class:`ConfigError` about an override without a value (``~key``): ``<override> is invalid: ...``."""

    def __init__(self, override: str, allowed: str) -> None:
        self.key, self.value, self.allowed = override, None, allowed
        ValueError.__init__(self, f"{override} is invalid: {allowed}")


# Suggestions for a typo'd key, at most.
_SUGGESTIONS = 3


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


def as_override_value(value: Any) -> str:
    """A value as it is written on the command line (``true``, ``null``, ``[64,64]``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(as_override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{as_override_value(v)}" for k, v in value.items()) + "}"
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
    key: str, text: str | None, command: str, base_config: Callable[[str | None], DictConfig | None]
) -> ConfigError:
    """An override of a key the config does not have: the closest keys it has, or, under a field
    that is open to new keys (``env.kwargs``, ``env.reward_scales``), how to add it."""
    app = f"locomo {command}"
    value = value_of(text)
    base = base_config(text)
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


def composition_error(
    exc: Exception,
    command: str,
    overrides: list[str],
    base_config: Callable[[str | None], DictConfig | None],
) -> ConfigError:
    """Hydra's error composing the command's config with ``overrides`` as locomo's one line: the
    key or group option and its value, what is wrong and what to do. ``base_config(without)`` is
    the config (with Hydra's) composed without the override ``without``, or None."""
    app = f"locomo {command}"
    message, cause = str(exc), exc.__cause__
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        text = override_of(overrides, group)
        value = value_of(text) if text is not None else option
        choices = ", ".join(_ranked(option, list(exc.options)))
        return ConfigError(
            group, value, f"not one of the {group} options; choose one of {choices} (closest first)"
        )
    found = re.match(r"Could not override '([^']+)'", message)
    if found and isinstance(cause, ConfigKeyError | ConfigAttributeError):
        key = found.group(1)
        return _unknown_key(key, override_of(overrides, key), command, base_config)
    found = re.match(r"Could not delete from config\. '([^']+)' does not exist", message)
    if found:
        key = found.group(1)
        base = base_config(override_of(overrides, key))
        tree = OmegaConf.to_container(base, resolve=False) if base is not None else {}
        close = [k for k in _closest(key, _dotted_keys(tree)) if not k.startswith("hydra")]
        listed = f"{app} --help lists its keys"
        if close:
            listed = f"did you mean {_listed(['~' + k for k in close])}? ({listed})"
        return KeyOnlyError(f"~{key}", f"there is no key {key} to delete; {listed}")
    found = re.match(r"(\S+) appears more than once in the final defaults list", message)
    if found:
        group = found.group(1)
        text = override_of(overrides, group) or group
        value = value_of(text)
        return ConfigError(
            f"+{group}",
            value,
            f"{group} is chosen in the config already; choose it without '+' ({group}={value})",
        )
    found = re.match(r"Could not append to config\. An item is already at '([^']+)'", message)
    if found:
        key = found.group(1)
        text = override_of(overrides, key) or key
        value = value_of(text)
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
        value = value_of(text)
        base = base_config(text)
        node = _node(base, key) if base is not None else None
        expected = _expected(node) if node is not None else None
        if expected is None:
            return ConfigError(key, value, f"{_one_line(cause)}; {app} --help says what each key takes")
        now = as_override_value(
            OmegaConf.to_container(node) if isinstance(node, DictConfig | ListConfig) else node._value()
        )
        return ConfigError(
            key, value, f"must be {expected}; e.g. {key}={now} (its value without this override)"
        )
    found = re.match(r"Ambiguous value for argument '([^=']+)=", message)
    if found:
        key = found.group(1)
        text = override_of(overrides, key) or key
        value = value_of(text)
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
