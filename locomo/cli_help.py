"""``locomo <command> --help``: the command's keys, one line of meaning each, generated from its schema.

Hydra prints ``hydra.help.template`` for ``--help``. Each ``conf/<command>.yaml`` sets it to
``${locomo_help:<command>}``, a resolver (registered by :func:`register_help_resolver`, which
:mod:`locomo.cli` calls beside :func:`locomo.config.schema.register_configs`) that builds the text from
the command's schema dataclass in :mod:`locomo.config.schema`: every key, and as its meaning the comment
written beside the field (and any comment lines right above it). So the help lists exactly the
keys the command accepts and cannot drift from the schema.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any

from omegaconf import OmegaConf

from locomo.commands import COMMANDS
from locomo.config.schema import (
    BenchConfig,
    EvalConfig,
    ExportConfig,
    LocomoConfig,
    PlotConfig,
    RenderConfig,
    ReplayConfig,
    VarianceConfig,
)

# command -> its schema (what conf/<command>.yaml is checked against; see register_configs)
SCHEMAS: dict[str, type] = {
    "train": LocomoConfig,
    "eval": EvalConfig,
    "render": RenderConfig,
    "replay": ReplayConfig,
    "export": ExportConfig,
    "variance": VarianceConfig,
    "plot": PlotConfig,
    "bench": BenchConfig,
}
# Commands whose config has groups (env=<name>, algo=<preset>): their help lists the options.
WITH_GROUPS = ("train", "variance")
RESOLVER = "locomo_help"
WIDTH = 100  # columns of the help text


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment, for the fields ``cls``'s own body declares.

    The comment is the one at the end of the field's line (its last line, for a default that spans
    several), else the comment lines right above the field; its first sentence.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source shipped (bytecode only): the keys without meanings
        return {}
    lines = source.splitlines()
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    out = {}
    for item in node.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        above: list[str] = []
        n = item.lineno - 1
        while n >= 1 and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        end = item.end_lineno or item.lineno
        trailing = comments.get(end) if not lines[end - 1].lstrip().startswith("#") else None
        out[item.target.id] = first_sentence(trailing or " ".join(above))
    return out


def first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence: one line of meaning, the details stay in the source."""
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text.strip(), maxsplit=1)[0]


def schema_keys(schema: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, meaning) of every key of ``schema`` (a dataclass), nested sections flattened."""
    hints = typing.get_type_hints(schema)
    # The most derived class that declares a field has its comment (e.g. VideoConfig.fps).
    declared: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if dataclasses.is_dataclass(cls):
            declared.update(field_comments(cls))
    out = []
    for f in dataclasses.fields(schema):
        sub = hints[f.name]
        if dataclasses.is_dataclass(sub):
            out += schema_keys(sub, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            out.append((f"{prefix}{f.name}", declared.get(f.name, "")))
    return out


def command_help(command: str) -> str:
    """The ``--help`` text of ``command`` as a Hydra help template (``$APP_CONFIG_GROUPS``, ``$$``)."""
    keys = schema_keys(SCHEMAS[command])
    width = min(max(len(k) for k, _ in keys) + 2, 32)
    lines = [f"locomo {command}: {COMMANDS[command][1]}", ""]
    lines.append(f"usage: locomo {command} [key=value ...]")
    lines += ["", "keys (key=value overrides; `--cfg job` prints their values):"]
    for key, meaning in keys:
        head = f"  {key:<{width}}"
        if len(head) > width + 2:  # a key longer than the column: its meaning on the next line
            lines.append(head.rstrip())
            head = " " * (width + 2)
        wrapped = textwrap.wrap(meaning or "-", WIDTH - len(head)) or ["-"]
        lines.append(head + wrapped[0])
        lines += [" " * len(head) + more for more in wrapped[1:]]
    if command in WITH_GROUPS:
        lines += ["", "config groups (e.g. env=cartpole algo=baseline):", "$APP_CONFIG_GROUPS"]
    lines += ["", f"Hydra's own flags: locomo {command} --hydra-help"]
    # Hydra fills the template with string.Template: a literal $ must be $$.
    return "\n".join(line.replace("$", "$$") if "$APP" not in line else line for line in lines) + "\n"


def register_help_resolver() -> None:
    """Make ``${locomo_help:<command>}`` available to the configs (idempotent)."""

    def resolve(command: Any) -> str:
        return command_help(str(command))

    OmegaConf.register_new_resolver(RESOLVER, resolve, replace=True)
