"""Shared by the benchmark scripts: print a result as JSON and write it to ``--json``."""

from __future__ import annotations

import json
from typing import Any


def emit(out: dict[str, Any], path: str | None) -> None:
    """Print ``out`` as indented JSON and, with ``path``, write the same JSON there."""
    print(json.dumps(out, indent=1))
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
