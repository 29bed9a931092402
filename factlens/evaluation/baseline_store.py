"""A folder that lets several processes share the unedited model's numbers (:class:`BaselineStore`).

The runner's worker processes (``--workers 2``) each load the model and evaluate their
edits against the unedited model. What they compute on the unedited model is the same in
every worker (the soft-prompt and direction-ablation attacks on it, its scores in each
prompt format, its MMLU answers, its probes: about 200 CPU seconds for the default main
job), so a :class:`~factlens.evaluation.baseline_cache.BaselineCache` given a store writes
each value it computes into the store's folder, and a cache in another process reads it
instead of computing it again.

Entries are JSON (structure, numbers) plus safetensors (arrays), never pickles: a value is
encoded by :func:`encode_value` from ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
lists, tuples, dicts, numpy arrays and scalars, torch tensors and dataclasses defined in
``factlens``; anything else raises ``TypeError`` and is simply not shared (the process
keeps its own copy). Floats go through ``repr`` and arrays through their raw bytes, so a
value read back is bit for bit the one written (tests/evaluation/test_baseline_store.py).

Entries live under a digest of the original model (the cache's fingerprint of every bit of
its parameters and buffers, its dtype, device and architecture config), so a store never
serves one model's numbers to another; each entry
holds its full key, compared on reading. Writes are atomic (a temporary file, then a
rename; the JSON last), so a reader sees a whole entry or none; two processes that compute
the same entry at once both write it, with the same content. A store holds results of the
code that wrote it: the runner makes a new, temporary one per run and deletes it at the end.

Example:
    >>> import copy, tempfile
    >>> from factlens.evaluation import BaselineCache, evaluate
    >>> from factlens.testing import planted_fact_model
    >>> p = planted_fact_model()
    >>> edited = copy.deepcopy(p.model)
    >>> folder = tempfile.mkdtemp()
    >>> first, second = BaselineCache(store=BaselineStore(folder)), BaselineCache(store=BaselineStore(folder))
    >>> a = evaluate(edited, p.task, original=p.model, suites=["standard"], baselines=first)
    >>> b = evaluate(edited, p.task, original=p.model, suites=["standard"], baselines=second)
    >>> first.misses, second.misses, second.store_hits  # the second cache read both entries from the folder
    (2, 0, 2)
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
from pathlib import Path
from typing import Any, Hashable

import numpy as np
import torch

from factlens.files import write_atomic

__all__ = ["BaselineStore", "encode_value", "decode_value", "key_text"]

_ATOMS = (type(None), bool, int, str)


def key_text(key: Hashable) -> str:
    """A canonical text of a cache key made of ``None``, bools, ints, floats, strings, bytes and tuples.

    Raises ``TypeError`` for anything else: the text of other objects (a numpy array's
    abbreviated repr, an object's address) would not tell two keys apart reliably.
    """
    if isinstance(key, (*_ATOMS, bytes)):
        return repr(key)
    if isinstance(key, float):
        return repr(key) if math.isfinite(key) else f"float({str(key)!r})"
    if isinstance(key, tuple):
        return "(" + ",".join(key_text(k) for k in key) + ",)"
    raise TypeError(f"a shared cache key holds a {type(key).__name__}; only None, bool, int, float, str, bytes and "
                    "tuples have a reliable text")


def encode_value(value: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(tree, tensors)``: a JSON-ready tree of ``value`` and the arrays it refers to by name.

    Raises:
        TypeError: ``value`` holds something other than the types listed in the module docs.
    """
    tensors: dict[str, torch.Tensor] = {}
    return _enc(value, tensors), tensors


def _enc(v: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(v, np.generic):  # first: numpy.float64 is also a float
        return {"$npscalar": v.dtype.str, "value": _enc(v.item(), tensors)}
    if isinstance(v, _ATOMS):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"$float": str(v)}
    if isinstance(v, bytes):
        return {"$bytes": v.hex()}
    if isinstance(v, (list, tuple)):
        items = [_enc(x, tensors) for x in v]
        return items if type(v) is list else {"$tuple": items}
    if isinstance(v, dict):
        return {"$dict": [[_enc(k, tensors), _enc(x, tensors)] for k, x in v.items()]}
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            raise TypeError("a numpy array of Python objects cannot be stored without pickling")
        name = f"t{len(tensors)}"
        native = v.dtype.newbyteorder("=")  # torch holds native byte order only: a big-endian array is converted
        # (np.array, not ascontiguousarray, which makes 0-d arrays 1-d)
        tensors[name] = torch.from_numpy(np.array(v, dtype=native, order="C", copy=True))
        return {"$ndarray": name} if v.dtype.isnative else {"$ndarray": name, "dtype": v.dtype.str}
    if isinstance(v, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = v.detach().to("cpu").contiguous().clone()
        return {"$tensor": name, "device": str(v.device)}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        cls = type(v)
        if not cls.__module__.startswith("factlens."):
            raise TypeError(f"{cls.__module__}.{cls.__qualname__} is not a factlens dataclass")
        return {"$dataclass": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: _enc(getattr(v, f.name), tensors) for f in dataclasses.fields(v)}}
    raise TypeError(f"cannot store a {type(v).__module__}.{type(v).__qualname__} without pickling")


def decode_value(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The value that :func:`encode_value` encoded as ``(tree, tensors)``."""
    if isinstance(tree, _ATOMS) or isinstance(tree, float):
        return tree
    if isinstance(tree, list):
        return [decode_value(x, tensors) for x in tree]
    if "$float" in tree:
        return float(tree["$float"])
    if "$bytes" in tree:
        return bytes.fromhex(tree["$bytes"])
    if "$tuple" in tree:
        return tuple(decode_value(x, tensors) for x in tree["$tuple"])
    if "$dict" in tree:
        return {_hashable(decode_value(k, tensors)): decode_value(x, tensors) for k, x in tree["$dict"]}
    if "$ndarray" in tree:  # "dtype": a non-native byte order, given back as stored (same values, same dtype)
        array = tensors[tree["$ndarray"]].numpy()
        return array.astype(np.dtype(tree["dtype"])) if "dtype" in tree else array
    if "$npscalar" in tree:
        return np.dtype(tree["$npscalar"]).type(decode_value(tree["value"], tensors))
    if "$tensor" in tree:
        return tensors[tree["$tensor"]].to(tree["device"])
    if "$dataclass" in tree:
        return _dataclass(tree["$dataclass"], {k: decode_value(x, tensors) for k, x in tree["fields"].items()})
    raise ValueError(f"not an encoded value: {sorted(tree)[:4]}")


def _hashable(k: Any) -> Any:
    return tuple(_hashable(x) for x in k) if isinstance(k, list) else k


def _dataclass(path: str, fields: dict[str, Any]) -> Any:
    module, _, qualname = path.partition(":")
    if not module.startswith("factlens."):
        raise ValueError(f"a stored value names {path}, which is not a factlens class")
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"a stored value names {path}, which is not a dataclass")
    known = {f.name: f for f in dataclasses.fields(cls)}
    if set(fields) != set(known):
        raise ValueError(f"{path} has the fields {sorted(known)} today; the stored value has {sorted(fields)}")
    obj = cls(**{n: v for n, v in fields.items() if known[n].init})
    for n, v in fields.items():
        if not known[n].init:
            object.__setattr__(obj, n, v)
    return obj


class BaselineStore:
    """A folder of cache entries shared by processes (see the module docs).

    Args:
        path: The folder (created if missing). Give every process of one run the same path.

    Attributes:
        writes: Entries this object wrote.
        skipped: Values that could not be encoded (kept only in the process's memory).
        unreadable: Entries that could not be read back (a damaged or foreign file): those
            values are computed again and the entry rewritten.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.writes = 0
        self.skipped = 0
        self.unreadable = 0

    def __repr__(self) -> str:
        return f"BaselineStore({str(self.path)!r}, writes={self.writes}, skipped={self.skipped})"

    @staticmethod
    def model_digest(fingerprint: str, model) -> str:
        """The folder name of one original model's entries: its fingerprint (the cache's digest of
        every parameter's and buffer's bits), dtype, device and architecture config (``model.cfg``:
        two models with equal weights and, say, another attention window do not share entries)."""
        from factlens.evaluation.baseline_cache import model_config_text

        p = next(iter(model.parameters()), None)
        where = "" if p is None else f"{p.dtype}|{p.device}"
        text = f"{where}|{model_config_text(model)}|{key_text(fingerprint)}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _files(self, model_digest: str, text: str) -> tuple[Path, Path]:
        name = hashlib.sha256(text.encode()).hexdigest()[:32]
        folder = self.path / model_digest
        return folder / f"{name}.json", folder / f"{name}.safetensors"

    def get(self, model_digest: str, key: Hashable) -> tuple[bool, Any]:
        """``(True, value)`` when another process stored ``key``, else ``(False, None)``."""
        try:
            text = key_text(key)
        except TypeError:
            return False, None
        meta_file, data_file = self._files(model_digest, text)
        if not meta_file.exists():
            return False, None
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("key") != text:  # a hash collision: not this key
                return False, None
            tensors = {}
            if meta.get("tensors"):
                from safetensors.torch import load_file

                tensors = load_file(str(data_file))
            return True, decode_value(meta["value"], tensors)
        except Exception:  # noqa: BLE001 - any unreadable entry (safetensors raises its own error type)
            self.unreadable += 1  # computing the value again is always correct
            return False, None

    def put(self, model_digest: str, key: Hashable, value: Any) -> bool:
        """Store ``value`` under ``key``; ``False`` (nothing written) when the key or value cannot be encoded.

        A value is not encodable when it holds a type :func:`encode_value` refuses, or an array
        whose dtype safetensors cannot write (e.g. complex128, which it raises ``KeyError`` for):
        such values are counted in :attr:`skipped` and stay in the calling process's memory
        rather than stop the evaluation.
        """
        try:
            text = key_text(key)
            tree, tensors = encode_value(value)
        except (TypeError, ValueError):
            self.skipped += 1
            return False
        meta_file, data_file = self._files(model_digest, text)
        meta_file.parent.mkdir(parents=True, exist_ok=True)
        if tensors:
            from safetensors.torch import save_file

            try:
                write_atomic(data_file, lambda tmp: save_file(tensors, str(tmp)))
            except (KeyError, TypeError, ValueError):  # a dtype safetensors has no code for; no file is left
                self.skipped += 1
                return False
        body = json.dumps({"key": text, "value": tree, "tensors": bool(tensors)})
        write_atomic(meta_file, lambda tmp: tmp.write_text(body))
        self.writes += 1
        return True
