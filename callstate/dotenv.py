"""``./.env``: the settings file `make run` hands its processes, read the same way by every command.

`make run` runs the Procfile under honcho, which gives each process the variables of ``./.env``;
so that ``callstate token``, ``replay``, ``inspect``... see the same values after ``make run`` (the
same ``SECRET_KEY``, the Redis it started), every ``callstate`` command reads ``./.env`` too, with
honcho's own parser (:func:`honcho.environ.parse`): one parser, so a value means the same to the
processes and to the commands. (python-dotenv would read quotes and escapes differently from the
processes' view.) The environment wins over the file, as with honcho and python-dotenv.

``python -m callstate.dotenv NAME...`` prints ``export NAME=<value>`` lines (shell-quoted) for the
names set in the environment or the file: how ``scripts/run`` reads its few variables without a
second parser.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from honcho.environ import parse

DEFAULT: Path = Path(".env")


def read(path: Path = DEFAULT) -> dict[str, str]:
    """The variables of ``path``; empty when there is no such file."""
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = parse(content)
    return values


def merged(environ: Mapping[str, str], path: Path = DEFAULT) -> dict[str, str]:
    """``path``'s variables overridden by ``environ``'s."""
    return {**read(path), **environ}


def load(environ: MutableMapping[str, str], path: Path = DEFAULT) -> None:
    """Add ``path``'s variables to ``environ`` where it has none (so child processes, like uvicorn's
    workers and RQ's scheduler, get them too)."""
    for name, value in read(path).items():
        environ.setdefault(name, value)


def main(argv: list[str]) -> int:
    import os  # noqa: PLC0415 - the edge: the one place besides callstate.cli that reads it

    values = merged(os.environ)
    for name in argv:
        if name in values:
            print(f"export {name}={shlex.quote(values[name])}")  # noqa: T201 - for the shell's eval
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
