"""TOML text from plain values: the ``mirrors.toml`` that ``shoal mirror import-tunasync`` writes.

Pure. Only what a converted config holds is written: top-level tables of strings, integers, booleans and
arrays of them, then ``[[jobs]]`` with their sub-tables (``[jobs.hooks]``, ``[jobs.env]``). A value of
another type is a TypeError, never a guess: the text must read back (tomllib) into the same values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any


def render(sections: Mapping[str, Mapping[str, Any]], jobs: Sequence[Mapping[str, Any]]) -> str:
    """``[manager]``, ``[worker]`` (when not empty) and ``[[jobs]]`` as TOML, sub-tables after each job's keys."""
    out: list[str] = []
    for name, table in sections.items():
        if table:
            out += ["", f"[{name}]", *_pairs(table)]
    for job in jobs:
        out += ["", "[[jobs]]", *_pairs({k: v for k, v in job.items() if not isinstance(v, dict)})]
        for name, table in job.items():
            if isinstance(table, dict):
                out += [f"[jobs.{name}]", *_pairs(table)]
    return "\n".join(out).lstrip("\n") + "\n"


def _pairs(table: Mapping[str, Any]) -> list[str]:
    return [f"{_key(key)} = {_value(value)}" for key, value in table.items()]


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _value(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string: the same escapes (\" \\ \n \t \uXXXX).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
