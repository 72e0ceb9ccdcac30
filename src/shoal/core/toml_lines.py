"""Where a key is written in a TOML text: tomllib gives values without lines, and a message about a bad value
should name the line it is on (mirrors.toml's, core.mirror_toml; a command's ``--config`` file's,
cli.config_file).

A scan, not a parser: it follows table headers (counting ``[[array]]`` entries) and ``key =`` lines, and
skips the insides of multi-line strings. Only used on text tomllib has accepted. When a key cannot be placed
(it sits inside an inline table spread over lines, say) :func:`line_of` gives the line of its table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

KeyPath = tuple[str | int, ...]
"""Keys and array indexes from the top of the document: ``("jobs", 1, "hooks")``."""

_HEADER = re.compile(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_KEY = re.compile(rf"\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")


def _split_key(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(_BARE_OR_QUOTED, dotted)]


def key_lines(text: str) -> dict[KeyPath, int]:
    """The line (1-based) where each table and key is first written, by path."""
    lines: dict[KeyPath, int] = {}
    counts: dict[KeyPath, int] = {}  # array-of-tables path -> entries seen
    prefix: KeyPath = ()
    in_string: str | None = None  # the delimiter of the multi-line string being skipped
    for number, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            parts = _split_key(header[2])
            resolved: list[str | int] = []
            for i, part in enumerate(parts):
                resolved.append(part)
                key = tuple(resolved)
                last = i == len(parts) - 1
                if last and header[1] == "[[":
                    counts[key] = counts.get(key, 0) + 1
                if key in counts:
                    resolved.append(counts[key] - 1)
            prefix = tuple(resolved)
            lines.setdefault(prefix, number)
            continue
        match = _KEY.match(line)
        if match:
            path = prefix
            for part in _split_key(match[1]):
                path = (*path, part)
                lines.setdefault(path, number)
            rest = line[match.end() :]
            for delimiter in ('"""', "'''"):
                if rest.count(delimiter) % 2 == 1:
                    in_string = delimiter
                    break
    return lines


def line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, or of its nearest enclosing table that has one."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None
