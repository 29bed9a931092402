"""Checks of :func:`factlens.models.load_model`'s inputs, run before anything loads, and of a
local checkpoint's sizes against its TransformerLens architecture (split from
:mod:`factlens.models` to keep it small).

A mistake here cost minutes before: a dtype given as a string failed after the conversion, an
unavailable CUDA device deep inside TransformerLens, a misspelt ``tl_name`` after a GGUF was
dequantized, a misspelt conversion option was ignored, and a checkpoint of other sizes than its
``tl_name`` was read into a model of the wrong shape.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_arg_types", "check_dtype", "check_device", "check_options", "did_you_mean", "check_tl_name",
           "tl_config", "hf_sizes", "check_architecture", "check_supported"]


#: dtype names :func:`load_model` takes for the dtypes it loads in.
_DTYPE_NAMES = {"float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
                "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
                "float64": torch.float64, "double": torch.float64, "fp64": torch.float64}


def check_arg_types(*, name, path, gguf, tl_name) -> None:
    """Refuse a ``name``/``tl_name`` that is no string and a ``path``/``gguf`` that is no path, before
    anything else: ``load_model(123)`` failed inside ``pathlib`` ("expected str, bytes or
    os.PathLike object, not int") and ``load_model(["gpt2"])`` with "unhashable type: 'list'",
    neither naming the argument.

    Raises:
        TypeError: Which argument has which type, and what it takes.
    """
    import os

    bad = [f"{k}={v!r} is of type {type(v).__name__}, not a string (a model name)"
           for k, v in (("name", name), ("tl_name", tl_name)) if v is not None and not isinstance(v, str)]
    bad += [f"{k}={v!r} is of type {type(v).__name__}, not a path (a str or pathlib.Path)"
            for k, v in (("path", path), ("gguf", gguf)) if v is not None and not isinstance(v, (str, os.PathLike))]
    if bad:
        raise TypeError("load_model: " + "; ".join(bad) + ". E.g. load_model('gemma-3-270m'), load_model('gpt2'), "
                        "load_model(path='ckpt/', tl_name='gpt2')")


def check_dtype(dtype) -> torch.dtype:
    """``dtype`` as a torch dtype, if it is one the models load in (float32, bfloat16, float16,
    float64; names such as ``"bfloat16"`` are taken). Others failed late, after the load
    (a string in ``model.to``), or gave models no forward pass runs on (float8, int8)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}: load_model takes torch.float32 (default), torch.bfloat16, "
                             f"torch.float16 or torch.float64, or one of the names {sorted(_DTYPE_NAMES)}")
        return _DTYPE_NAMES[key]
    if not isinstance(dtype, torch.dtype) or dtype not in set(_DTYPE_NAMES.values()):
        raise ValueError(f"dtype={dtype!r} is not supported: load_model loads weights in torch.float32 (default), "
                         "torch.bfloat16, torch.float16 or torch.float64 (quantized weights: see the quantization "
                         "attack, factlens.evaluation.quantization)")
    return dtype


def check_device(device) -> torch.device:
    """``device`` as a torch device (default: the CPU), refusing before any loading a CUDA or
    MPS device this machine does not have (they failed after minutes of conversion, or deep
    inside TransformerLens)."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"device={device!r} is not a torch device ({e}); use e.g. 'cpu', 'cuda', 'cuda:0' or "
                         "'mps'") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device={device!r}, but CUDA is not available on this machine "
                             f"(torch.cuda.is_available() is False; torch {torch.__version__}); use device='cpu', "
                             "or install a CUDA build of torch on a machine with an NVIDIA GPU")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device={device!r}, but this machine has {n} CUDA device(s): "
                             f"{', '.join(f'cuda:{i}' for i in range(n))}")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device={device!r}, but MPS (Apple GPU) is not available on this machine; use "
                             "device='cpu'")
    return dev


#: Hugging Face loading options that ``HookedTransformer.from_pretrained`` passes on when it
#: downloads a model (Hub names only: the other routes load the Hugging Face model themselves).
_HF_OPTIONS = ("revision", "trust_remote_code", "token", "cache_dir", "local_files_only", "force_download",
               "torch_dtype", "load_in_8bit", "load_in_4bit", "quantization_config", "attn_implementation",
               "low_cpu_mem_usage", "device_map", "subfolder", "use_safetensors", "variant")


def check_options(options: dict, *, hub: bool) -> None:
    """Refuse conversion options that ``HookedTransformer.from_pretrained`` does not take.

    TransformerLens passes unknown keywords on to Hugging Face, which ignores them, so that
    ``fold_LN=False`` or ``center_unembeded=False`` gave the default conversion without a word
    (and, given to the embedded model, turned its cache off). ``hub``: Hugging Face loading
    options (``revision=``...) are also taken, as TransformerLens downloads the model.
    """
    if not options:
        return
    import inspect

    params = inspect.signature(_hooked_transformer_from_pretrained()).parameters
    accepted = {k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    accepted -= {"model_name", "device", "dtype"}  # load_model's own arguments
    accepted = accepted | set(_HF_OPTIONS) if hub else accepted - {"hf_model", "tokenizer"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        import difflib

        close = {k: difflib.get_close_matches(k, sorted(accepted), n=1, cutoff=0.6) for k in unknown}
        hints = "; ".join(f"{k!r}: did you mean {c[0]!r}?" for k, c in close.items() if c)
        raise ValueError(f"unknown load_model option(s) {unknown}{' (' + hints + ')' if hints else ''}. Options "
                         f"accepted here (HookedTransformer.from_pretrained's): {sorted(accepted)}")


def did_you_mean(name: str) -> str:
    """`` Did you mean [...]?`` with up to three known model names close to ``name`` (each once), or ``""``."""
    import difflib

    from transformer_lens import loading

    from factlens.models import EMBEDDED_MODELS

    known = list(dict.fromkeys([*loading.OFFICIAL_MODEL_NAMES, *EMBEDDED_MODELS]))  # google/gemma-3-270m is in both
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f" Did you mean {close}?" if close else ""


def check_tl_name(tl_name: str) -> str:
    """Check a ``tl_name`` (the TransformerLens architecture of a ``path=``/``gguf=`` checkpoint)
    before the checkpoint is loaded; returns it unchanged. TransformerLens checked it only after
    the load (minutes for a GGUF), answering with its whole list of names."""
    from transformer_lens import loading

    try:
        loading.get_official_model_name(tl_name)
    except (ValueError, AttributeError):
        raise ValueError(
            f"unknown TransformerLens architecture tl_name={tl_name!r}.{did_you_mean(str(tl_name))} tl_name= "
            "takes a name from transformer_lens.loading.OFFICIAL_MODEL_NAMES (or an alias) with the checkpoint's "
            "architecture and sizes, e.g. 'gpt2', 'meta-llama/Llama-3.2-1B', 'google/gemma-3-270m'") from None
    return tl_name


def tl_config(tl_name: str, hf_config):
    """TransformerLens's config for ``tl_name`` (with the Hugging Face model's vocabulary size).

    For most architectures TransformerLens reads it from the Hugging Face Hub
    (``AutoConfig.from_pretrained`` of the official name), even for local weights; a failure
    there was a bare ``OSError`` from deep inside TransformerLens.
    """
    from transformer_lens import loading

    official = loading.get_official_model_name(tl_name)
    try:
        return loading.get_pretrained_model_config(official, hf_cfg=hf_config.to_dict(), fold_ln=False)
    except (OSError, ConnectionError) as e:
        raise ValueError(
            f"TransformerLens could not read the configuration of the {tl_name!r} architecture "
            f"({type(e).__name__}: {str(e)[:300]}). For most architectures TransformerLens reads it from the "
            f"Hugging Face Hub (AutoConfig.from_pretrained({official!r})), even when the weights are local "
            "(path=, gguf=); only Llama and Gemma names (e.g. 'meta-llama/Llama-3.2-1B', 'google/gemma-3-270m') "
            "are built without the Hub. Connect to the Hub once (the configuration is then in your Hugging Face "
            "cache, which HF_HUB_OFFLINE=1 uses), or convert a Llama or Gemma checkpoint.") from e


def hf_sizes(hf_config) -> dict[str, tuple[str, Any]]:
    """The sizes a Hugging Face config gives, keyed by the TransformerLens config field that must
    equal them: ``{tl field: (Hugging Face field, value)}``, leaving out what the config lacks."""
    c = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    get = lambda k: getattr(c, k, None)  # noqa: E731
    hidden, heads = get("hidden_size"), get("num_attention_heads")
    mlp = get("intermediate_size") or get("n_inner")
    if mlp is None and hasattr(c, "n_inner") and hidden:  # GPT-2's default MLP width
        mlp = 4 * hidden
    rope = get("rope_parameters") or {}
    sizes = {"n_layers": ("num_hidden_layers", get("num_hidden_layers")), "d_model": ("hidden_size", hidden),
             "n_heads": ("num_attention_heads", heads),
             "n_key_value_heads": ("num_key_value_heads", get("num_key_value_heads")),
             "d_head": ("head_dim", get("head_dim") or (hidden // heads if hidden and heads else None)),
             "d_vocab": ("vocab_size", get("vocab_size")), "d_mlp": ("intermediate_size", mlp),
             "rotary_base": ("rope_theta", get("rope_theta") or rope.get("rope_theta")
                             or (rope.get("full_attention") or {}).get("rope_theta")),
             "rotary_base_local": ("rope_theta (sliding_attention)",
                                   (rope.get("sliding_attention") or {}).get("rope_theta")),
             "window_size": ("sliding_window", get("sliding_window"))}
    return {k: v for k, v in sizes.items() if v[1] is not None}


def check_architecture(hf_config, cfg, tl_name: str) -> None:
    """Refuse a checkpoint whose sizes are not those of ``tl_name``'s architecture.

    TransformerLens builds the model from its own config for ``tl_name`` and reads the
    checkpoint's weights into it: a 19-layer checkpoint loaded as ``google/gemma-3-270m``
    became an 18-layer model without a word (its last layer dropped), a smaller one an
    ``IndexError``. Compared: layers, widths, heads (query and key/value), head size,
    vocabulary, MLP width, rotary base(s) and sliding window, where both configs give them.
    """
    tl_values = {"n_key_value_heads": cfg.n_key_value_heads or cfg.n_heads}
    rotary = cfg.positional_embedding_type == "rotary"
    diffs = []
    for field, (hf_field, hf_value) in hf_sizes(hf_config).items():
        tl_value = tl_values.get(field, getattr(cfg, field, None))
        skipped = ((field.startswith("rotary") and not rotary) or (field == "window_size" and not cfg.use_local_attn)
                   or (field == "d_mlp" and getattr(cfg, "num_experts", None)))  # MoE: per-expert width
        if tl_value is None or skipped:
            continue
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (hf_value, tl_value))
        if not numbers or float(hf_value) == float(tl_value):  # per-layer lists and the like: not compared
            continue
        diffs.append(f"{hf_field}={hf_value} in the checkpoint, {field}={tl_value} in TransformerLens")
    if diffs:
        raise ValueError(
            f"the checkpoint does not have the architecture of tl_name={tl_name!r}: TransformerLens builds the "
            f"model from its own configuration for {tl_name!r} and would read the checkpoint's weights into a "
            f"model of another shape. Differences: {'; '.join(diffs)}. Give the tl_name of the TransformerLens "
            "model this checkpoint is a copy or fine-tune of (same sizes); a checkpoint of sizes that no "
            "TransformerLens name has cannot be loaded with TransformerLens.")


def check_supported(cfg) -> None:
    """Refuse the architectures whose components factlens would count or treat wrongly.

    A mixture-of-experts MLP (``cfg.num_experts``) has no single ``W_in``/``W_out``: masks
    counted it as one dense MLP (a quarter of its parameters), edits crashed on the missing
    weights, and the LoRA and quantization attacks skipped the experts without a word.
    Bidirectional attention (``cfg.attention_dir``) makes every position read the right
    padding of a batch and the later tokens of a shared prefix, which the patching methods
    and the scorers assume it cannot (activation patching was off by up to 0.32 on a score
    scale of 1.5, and scores changed with the batch size). :func:`~factlens.models.load_model`
    checks it before it reads any weights, :class:`~factlens.components.ModelShape` for any model.
    """
    if getattr(cfg, "num_experts", None):
        raise ValueError(f"mixture-of-experts models (cfg.num_experts={cfg.num_experts}) are not supported: "
                         "components, masks, edits and attacks assume one dense MLP per layer; use a dense model")
    direction = getattr(cfg, "attention_dir", "causal")
    if direction != "causal":
        raise ValueError(f"attention_dir={direction!r} is not supported: factlens scores next-token predictions of "
                         "right-padded prompts, which needs causal attention (attention_dir='causal')")


def _hooked_transformer_from_pretrained():
    from factlens.models import _hooked_transformer

    return _hooked_transformer().from_pretrained
