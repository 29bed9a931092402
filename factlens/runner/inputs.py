"""The input files of a run: content hashes (compared on resume) and config files.

A run's data files are compared by content, not by name, when a run folder is resumed
(:meth:`~factlens.runner.config.RunConfig.input_hashes`): :func:`~factlens.files.hash_input`
hashes a file, or every file of a folder. :func:`load_config_file` reads a YAML, TOML or JSON run config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factlens.files import hash_input  # noqa: F401 - the runner's import of it, as before
from factlens.files import looks_local as _looks_local  # the runner's name for it

__all__ = ["hash_input", "load_config_file"]  # hash_input: factlens.files


def _where(source: str) -> str:
    p = Path(source).expanduser()
    return f"looked for {p.resolve()}" + ("" if p.is_absolute() else f" from {Path.cwd()}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON (``.json``) run config into a mapping.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Unsupported suffix or the file is not a mapping.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} does not exist")
    if p.is_dir():
        raise ValueError(f"config file {p} is a folder; give the .toml / .yaml file (e.g. {p}/config.toml)")
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Notepad) was "invalid TOML/JSON"
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {p} is not UTF-8 text ({e}); save it as UTF-8") from e
    if p.suffix == ".toml":
        import tomllib

        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{p}: invalid TOML ({e})") from e
    elif p.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:  # pragma: no cover
            raise ImportError("YAML configs need PyYAML: pip install pyyaml (or use a .toml config)") from e
        try:
            d = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: invalid YAML ({e})") from e
    elif p.suffix == ".json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: invalid JSON ({e})") from e
    else:
        raise ValueError(f"config file {p} must end in .toml, .yaml, .yml or .json")
    if not isinstance(d, dict):
        raise ValueError(f"{p}: a run config must be a mapping of keys to values, got {type(d).__name__}")
    return d
