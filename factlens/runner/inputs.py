"""The input files of a run: content hashes (compared on resume) and config files.

A run's data files are compared by content, not by name, when a run folder is resumed
(:meth:`~factlens.runner.config.RunConfig.input_hashes`): :func:`hash_input` hashes a file,
or every file of a folder. :func:`load_config_file` reads a YAML, TOML or JSON run config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factlens.files import file_sha256
from factlens.files import looks_local as _looks_local  # the runner's name for it

__all__ = ["hash_input", "load_config_file"]


def hash_input(source: str | Path) -> dict[str, Any]:
    """The sha256 of a local input file, or of a folder's files (relative path and content of
    each, in sorted order); sources that are not local paths (Hugging Face names) get ``None``.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "facts.csv"
        >>> _ = f.write_text("a,b")
        >>> h = hash_input(f)
        >>> (h["kind"], h["sha256"][:12])
        ('file', '1eb7c54d5283')
        >>> hash_input("azhx/counterfact")["sha256"] is None
        True
    """
    import hashlib

    p = Path(source).expanduser()
    if p.is_file():
        return {"path": str(source), "kind": "file", "bytes": p.stat().st_size, "sha256": file_sha256(p)}
    if p.is_dir():
        files = sorted((f for f in p.rglob("*") if f.is_file()), key=lambda f: f.relative_to(p).as_posix())
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.relative_to(p).as_posix()}\0{file_sha256(f)}\n".encode())
        return {"path": str(source), "kind": "folder", "n_files": len(files), "sha256": h.hexdigest()}
    return {"path": str(source), "kind": "not a local path (a dataset name; not hashed)", "sha256": None}


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
