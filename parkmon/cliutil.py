"""Small helpers shared by the service commands (gateway, streams, detect, edge)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from parkmon.errors import ParkFileError

if TYPE_CHECKING:
    from parkmon.park import Park


def load_park_or_explain(command: str, path: str | None, env_var: str) -> Park | None:
    """Load the park file for `parkmon <command>`; on any problem print what to do and return None.

    The caller exits with code 2 on None: no traceback, one line per problem in the file.
    """
    if not path:
        print(f"parkmon {command}: no park file; pass --park FILE or set {env_var}", file=sys.stderr)
        return None
    from parkmon.park import load_park

    try:
        return load_park(path)
    except ParkFileError as exc:
        print(f"parkmon {command}: park file is not valid:\n{exc}", file=sys.stderr)
    except OSError as exc:
        print(f"parkmon {command}: cannot read park file {path!r}: {exc}", file=sys.stderr)
    return None
