"""Second-moment statistics of MLP keys on general text (shared by ROME and MEMIT).

ROME and MEMIT write a new key -> value association into an MLP's output matrix ``W_out``
while disturbing the outputs for *other* keys as little as possible. "Other keys" are
modelled by their uncentered second moment ``C = E[k k^T]`` over general text, where a
key ``k`` is the MLP's hidden activation (the input of ``W_out``; TransformerLens hook
``blocks.L.mlp.hook_post``, for gated MLPs ``act(x W_gate) * (x W_in) + b_in``). ROME and
MEMIT estimate ``C`` on 100,000 Wikipedia *articles* (their ``layer_stats`` counts samples,
each up to the model's context length: tens of millions of tokens); factlens uses the general text of
:func:`factlens.data.text.load_texts` (the built-in text, a local file such as WikiText-2,
or a Hugging Face dataset -- the same sources as the side-effects suite) and by default
10,000 tokens (the built-in text gives only about 3,000 tokens with Gemma's tokenizer).

Position 0 of every chunk is left out: it is BOS where the model prepends one (subject keys
never sit there, and BOS activations are outliers in many models, attention sinks, that would
dominate ``C``), and for a model without BOS the chunk's first token, read without any context.

:func:`key_statistics` caches ``C`` as safetensors under ``<cache dir>/key_stats``
(``$FACTLENS_CACHE``, see :func:`factlens.models.cache_dir`), keyed by model name, layer,
text source and number of tokens, a hash of the token ids the statistics are taken over
(so an edited text file, or a built-in text or tokenizer that changed, never reads a matrix of
other text), plus a fingerprint of every weight that influences the
keys of that layer (embeddings, the blocks below, the layer's attention, norms and
``W_in``/``W_gate``/``b_in``). The layer's own ``W_out``/``b_out`` is not part of the
fingerprint, so sequential ROME edits of a layer reuse its statistics, while a fine-tuned
model that kept its name never reads stale ones.

With fewer tokens than ``d_mlp`` the estimate is singular and with a few thousand it is
poorly conditioned, so solves add a relative ridge ``ridge * mean(diag C) * I``
(:meth:`KeyStatistics.solve`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from factlens.components import mlp_hook, param_name
from factlens.digests import update_with_tensor
from factlens.files import write_atomic
from factlens.progress_bars import progress_bar

__all__ = ["KeyStatistics", "key_statistics", "weights_fingerprint", "collect_keys"]

_META_KEY = "factlens_key_stats"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class KeyStatistics:
    """The uncentered second moment ``C = E[k k^T]`` of one MLP layer's keys.

    Attributes:
        mom2: ``[d_mlp, d_mlp]`` float64 tensor on the CPU.
        n_tokens: Number of keys (tokens) averaged.
        layer: The MLP layer.
        model_name: ``model.cfg.model_name``.
        text_source: ``"builtin"`` or the text source string.
        fingerprint: Hash of the weights that produce the keys (see the module docstring).
        path: Cache file (``None`` when not cached).
    """

    mom2: Float[Tensor, "d_mlp d_mlp"]
    n_tokens: int
    layer: int
    model_name: str = ""
    text_source: str = "builtin"
    fingerprint: str = ""
    path: Path | None = None

    @property
    def d_mlp(self) -> int:
        return int(self.mom2.shape[0])

    def matrix(self, ridge: float = 0.0) -> Float[Tensor, "d_mlp d_mlp"]:
        """``C + ridge * mean(diag C) * I`` (float64, CPU)."""
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        c = self.mom2
        if ridge == 0:
            return c.clone()
        scale = float(torch.diagonal(c).mean())
        return c + (ridge * (scale if scale > 0 else 1.0)) * torch.eye(c.shape[0], dtype=c.dtype)

    def solve(self, rhs: Float[Tensor, "d_mlp ..."], ridge: float = 0.0) -> Float[Tensor, "d_mlp ..."]:
        """``(C + ridge * mean(diag C) * I)^-1 rhs`` in float64 on the CPU (Cholesky).

        Raises:
            ValueError: The matrix is not positive definite (too few tokens for ``d_mlp``
                without a ridge): use more tokens or ``ridge > 0``.
        """
        a = self.matrix(ridge)
        b = rhs.detach().to(device="cpu", dtype=torch.float64)
        vec = b.dim() == 1
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) != 0:
            raise ValueError(f"the key second moment of layer {self.layer} ({self.n_tokens} tokens, "
                             f"d_mlp={self.d_mlp}) "
                             f"is singular with ridge={ridge}; use more covariance tokens or a larger cov_ridge")
        out = torch.cholesky_solve(b[:, None] if vec else b, chol)
        return out[:, 0] if vec else out


def weights_fingerprint(model, layer: int) -> str:
    """Hash (BLAKE2b) of the model's architecture config and of every parameter that influences
    the keys of MLP ``layer``.

    That is everything in blocks ``0 .. layer`` and the embeddings, except the layer's own
    ``W_out`` and ``b_out`` (which act after the key). Hashes the exact bytes. The config
    (activation function, normalization, positional embedding, ... and with it the buffers it
    builds) is part of it since format 2: two models with the same name and weights but another
    ``act_fn`` shared one cache file and got each other's covariance.
    """
    from factlens.evaluation.baseline_cache import model_config_text

    skip = {param_name(layer, "mlp", "W_out"), param_name(layer, "mlp", "b_out")}
    pat = re.compile(r"^blocks\.(\d+)\.")
    h = hashlib.blake2b(f"key-statistics format 2|{model_config_text(model)}|".encode(), digest_size=16)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        m = pat.match(name)
        if name in skip or (m is not None and int(m.group(1)) > layer):
            continue
        if m is None and not name.startswith(("embed.", "pos_embed.")):
            continue  # final norm, unembedding
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        update_with_tensor(h, p)  # no host copy of a whole embedding
    return h.hexdigest()


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")
    return s[-40:] or "x"


def tokens_digest(tokens: Tensor) -> str:
    """BLAKE2b of the token ids (shape and values) that the statistics are taken over."""
    t = tokens.detach().to("cpu", torch.int64).contiguous()
    h = hashlib.blake2b(f"{tuple(t.shape)};".encode(), digest_size=16)
    h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


def _cache_path(model_name: str, layer: int, source: str, n_tokens: int, seq_len: int, fingerprint: str,
                text_digest: str) -> Path:
    from factlens.models import cache_dir

    if source == "builtin":
        src = "builtin"
    else:
        src = f"{_slug(Path(source).name)}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
    name = (f"{_slug(model_name)}_L{layer}_{src}-{text_digest[:12]}_{n_tokens}tok_s{seq_len}_{fingerprint[:16]}"
            ".safetensors")
    return cache_dir() / "key_stats" / name


def collect_keys(model, layer: int, tokens, *, skip_first: bool = True) -> Float[Tensor, "n d_mlp"]:
    """The keys (``hook_post`` of MLP ``layer``) at every position of ``tokens`` (no gradient).

    Runs the model only up to and including block ``layer``; the hook is removed afterwards.
    """
    out: list[Tensor] = []

    def grab(act, hook):
        out.append((act[:, 1:] if skip_first else act).detach().reshape(-1, act.shape[-1]))
        return act

    with torch.no_grad(), model.hooks(fwd_hooks=[(mlp_hook(layer, "post"), grab)]):
        model(tokens, stop_at_layer=layer + 1)
    return torch.cat(out)


def _check_layer(model, layer: int) -> None:
    n = model.cfg.n_layers
    if not 0 <= layer < n:
        raise ValueError(f"layer {layer} does not exist in a model with {n} layers")
    if getattr(model.cfg, "attn_only", False):
        raise ValueError("the model is attention-only: it has no MLP keys")
    if not hasattr(model.blocks[layer].mlp, "W_out"):
        raise ValueError(f"block {layer}'s MLP has no single W_out (mixture of experts?); ROME/MEMIT need a dense MLP")


def key_statistics(model, layer: int, *, text_source: str | None = None, n_tokens: int = 10_000, seq_len: int = 128,
                   batch_size: int = 8, cache: bool = True) -> KeyStatistics:
    """Estimate (or load from the cache) ``C = E[k k^T]`` of the keys of MLP ``layer``.

    Args:
        model: A ``HookedTransformer`` (not changed, no hooks left, not moved).
        layer: The MLP layer.
        text_source: General text: ``None`` (built-in), a local text file or a Hugging Face
            dataset name (see :func:`factlens.data.text.load_texts`).
        n_tokens: Keys to average (position 0 of every chunk excluded). Capped by the text: the
            result's ``n_tokens`` says how many were used.
        seq_len: Tokens per chunk (BOS included; capped at the model's ``n_ctx``).
        batch_size: Chunks per forward pass.
        cache: Read and write the safetensors cache (see the module docstring).

    Returns:
        The :class:`KeyStatistics` (float64, CPU).

    Example:
        >>> from factlens.testing import tiny_model
        >>> st = key_statistics(tiny_model(), 1, n_tokens=500, cache=False)
        >>> st.mom2.shape, st.n_tokens, st.solve(torch.ones(64), ridge=1e-3).shape
        (torch.Size([64, 64]), 500, torch.Size([64]))
    """
    from factlens.data.text import load_texts, token_chunks

    _check_layer(model, layer)
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    if seq_len < 2 or batch_size < 1:
        raise ValueError(f"seq_len must be >= 2 and batch_size >= 1, got {seq_len} and {batch_size}")
    seq_len = min(seq_len, int(model.cfg.n_ctx))  # chunks never exceed the context window
    source = "builtin" if text_source is None else str(text_source)
    model_name = str(getattr(model.cfg, "model_name", "") or "model")
    fp = weights_fingerprint(model, layer)
    chunks = token_chunks(model, load_texts(text_source), seq_len=seq_len, n_chunks=math.ceil(n_tokens / (seq_len - 1)))
    path = _cache_path(model_name, layer, source, n_tokens, seq_len, fp, tokens_digest(chunks)) if cache else None
    if path is not None and path.is_file():
        return _load(path)
    mom2 = torch.zeros(model.cfg.d_mlp, model.cfg.d_mlp, dtype=torch.float64)
    seen = 0
    starts = range(0, chunks.shape[0], batch_size)
    for s in progress_bar(starts, desc=f"key statistics L{layer}", leave=False):
        keys = collect_keys(model, layer, chunks[s:s + batch_size])[: n_tokens - seen].float()
        mom2 += (keys.T @ keys).to(device="cpu", dtype=torch.float64)
        seen += keys.shape[0]
        if seen >= n_tokens:
            break
    stats = KeyStatistics(mom2 / seen, seen, layer, model_name, source, fp, path)
    if path is not None:
        _save(stats, path, requested=n_tokens, seq_len=seq_len)
    return stats


def _save(stats: KeyStatistics, path: Path, *, requested: int, seq_len: int) -> None:
    from safetensors.torch import save_file

    meta = {"format_version": _FORMAT_VERSION, "n_tokens": stats.n_tokens, "n_tokens_requested": requested,
            "layer": stats.layer, "model_name": stats.model_name, "text_source": stats.text_source,
            "fingerprint": stats.fingerprint, "seq_len": seq_len}
    path.parent.mkdir(parents=True, exist_ok=True)
    # atomic, through a temporary file of this writer's own: a concurrent reader never sees half
    # a file, and two processes that compute the same statistics never write into one file
    write_atomic(path, lambda tmp: save_file({"mom2": stats.mom2.contiguous()}, str(tmp),
                                             metadata={_META_KEY: json.dumps(meta)}))


def _load(path: Path) -> KeyStatistics:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})[_META_KEY])
        mom2 = f.get_tensor("mom2")
    return KeyStatistics(mom2, int(meta["n_tokens"]), int(meta["layer"]), meta["model_name"], meta["text_source"],
                         meta["fingerprint"], path)
