"""The converted embedded model's cache (:func:`factlens.models.load_model`'s default route):
writing it whole beside other processes, checking it, and reading it back tensor by tensor.

Split from :mod:`factlens.models` to keep that module small; ``factlens.models`` imports these
helpers back, so ``factlens.models._load_weights`` and the others keep working.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

_FOLD_KEY = "factlens.fold_scales."  # the folded norm scales' keys' prefix in a cached checkpoint (fold_scales)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _cfg_to_json(cfg) -> dict:
    out = {}
    for k, v in cfg.to_dict().items():
        if isinstance(v, torch.dtype):
            v = {"__dtype__": _dtype_name(v)}
        elif isinstance(v, torch.device):
            v = str(v)
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def _cfg_from_json(d: dict):
    from transformer_lens import HookedTransformerConfig

    d = dict(d)
    for k, v in list(d.items()):
        if isinstance(v, dict) and "__dtype__" in v:
            d[k] = getattr(torch, v["__dtype__"])
    d.pop("n_params", None)
    return HookedTransformerConfig.from_dict(d) if hasattr(HookedTransformerConfig, "from_dict") else HookedTransformerConfig(**d)


def _write_cache(folder: Path, model, tok, readme: str) -> None:
    """Write the converted model into ``folder`` as a whole: the files go to a private temporary
    folder first, renamed into place in one step, so that another process (the runner's
    ``--workers``) converting at the same time, or reading, never sees a partial cache. When
    another process got there first with a usable cache, its folder is kept; a stale or partial
    one is replaced."""
    from safetensors.torch import save_file

    from factlens.models import fold_scales  # here, not at the top: factlens.models imports this module

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make a shared cache private to its writer
    try:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        state.update({_FOLD_KEY + k: v.contiguous() for k, v in (fold_scales(model) or {}).items()})
        save_file(state, str(tmp / "model.safetensors"))
        tok.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "config.json").write_text(json.dumps(_cfg_to_json(model.cfg), indent=1))
        (tmp / "README.txt").write_text(readme)
        try:
            os.rename(tmp, folder)
        except OSError:  # the folder exists (another process's cache, or a stale / partial one)
            if _usable_cache(folder, model):
                return
            aside = folder.with_name(f".{folder.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            try:
                os.rename(folder, aside)
            except FileNotFoundError:  # another process moved the stale folder aside first
                pass
            try:
                os.rename(tmp, folder)
            except OSError:  # ... and put its own in place: keep it if it is whole
                if not _usable_cache(folder, model):
                    raise
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _usable_cache(folder: Path, model) -> bool:
    """Whether ``folder`` holds a complete cache with every tensor ``model`` has."""
    import struct

    weights = folder / "model.safetensors"
    if not (weights.exists() and (folder / "config.json").exists() and (folder / "tokenizer").is_dir()):
        return False
    try:
        with open(weights, "rb") as f:
            return set(model.state_dict()) <= set(_safetensors_header(f))
    except (OSError, ValueError, struct.error):
        return False


def _read_fold_scales(weights: Path) -> dict[str, torch.Tensor]:
    """The folded norm scales stored beside a cached checkpoint's weights (:func:`fold_scales`)."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return {k[len(_FOLD_KEY):]: f.get_tensor(k) for k in f.keys() if k.startswith(_FOLD_KEY)}


def _safetensors_header(f) -> dict[str, Any]:
    """The header of a safetensors file open at its start (tensor name -> dtype, shape, offsets);
    ``f`` is left at the first tensor's bytes."""
    import struct

    (n,) = struct.unpack("<Q", f.read(8))
    return json.loads(f.read(n))


class StaleCheckpoint(ValueError):
    """A cached checkpoint lacks tensors the model has (written by another TransformerLens version)."""


#: safetensors dtype names -> torch dtypes (the ones a converted checkpoint can hold).
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _load_weights(model, weights: Path, dtype: torch.dtype, *, strict: bool = False) -> None:
    """Read a safetensors checkpoint into ``model`` tensor by tensor (keys the model lacks are
    skipped, as ``load_state_dict(strict=False)``). ``strict``: a tensor of the model that the
    file lacks is a :class:`StaleCheckpoint` error, checked before anything is read (the
    model's own value would otherwise stay, for the cache a random initialisation).

    Tensors whose dtype, shape and layout match are read straight into the parameter's memory;
    others go through one temporary tensor. Plain reads, not a memory map: a mapped 1.8 GB file
    counts in the process's resident memory while it is read, next to the model itself.
    """
    state = model.state_dict()
    with torch.no_grad(), open(weights, "rb") as f:
        header = _safetensors_header(f)
        base = f.tell()  # the tensors' bytes start after the header
        missing = sorted(set(state) - set(header))
        if strict and missing:
            raise StaleCheckpoint(f"{weights} lacks {len(missing)} tensors of the model ({missing[:3]}...)")
        for key, info in header.items():
            if key == "__metadata__" or key not in state:
                continue
            dst, src_dtype, shape = state[key], _ST_DTYPES[info["dtype"]], list(info["shape"])
            start, end = info["data_offsets"]
            f.seek(base + start)
            if list(dst.shape) != shape:
                raise ValueError(f"{weights}: {key} has shape {shape}, the model expects {list(dst.shape)}")
            if end == start:  # an empty tensor
                continue
            if src_dtype == dst.dtype and dst.is_contiguous() and dst.device.type == "cpu":
                view = memoryview(dst.reshape(-1).view(torch.uint8).numpy()).cast("B")
                if f.readinto(view) != end - start:
                    raise ValueError(f"{weights} is truncated at {key}; delete the folder to rebuild the cache")
            else:
                buf = bytearray(end - start)
                if f.readinto(buf) != end - start:
                    raise ValueError(f"{weights} is truncated at {key}; delete the folder to rebuild the cache")
                dst.copy_(torch.frombuffer(buf, dtype=src_dtype).reshape(shape).to(dst.dtype))
