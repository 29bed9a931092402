"""Shared-prefix forward passes: run the tokens every prompt of a batch starts with once.

Evaluation and training prompts share long prefixes: every default-format sports prompt
starts with the same solved example (``"Fact: Tiger Woods plays the sport of golf\\nFact:"``),
every multiple-choice prompt with the same solved questions. In a causal transformer the
activations of those positions do not depend on what follows, so they are the same for
every prompt of the batch. :func:`residual_after_prefix` runs the common prefix once (batch
of one) into a TransformerLens key/value cache and then only each prompt's remaining
tokens, attending to the cached keys and values. The result equals the plain forward pass
up to floating-point summation order (a different matrix shape), with or without
gradients: the prefix's keys and values stay in the autograd graph, so training through it
is exact too.

It is used automatically where factlens reads the final residual of right-padded prompts
(:func:`factlens.tokens.final_residual`, the editor's and the relearning attack's answer
log-probabilities) and falls back to the plain forward pass when it cannot help or could
change semantics:

* the common prefix is shorter than :data:`MIN_PREFIX` tokens, or the batch has one row;
* a position the caller reads lies inside the prefix;
* the model has hooks attached (hooks would see only the suffix positions): hooks on its
  TransformerLens hook points and plain PyTorch hooks (forward, forward-pre, backward) on any
  of its modules or registered globally, except hooks declared position-wise with
  :func:`mark_positionwise`;
* the model is not a TransformerLens ``HookedTransformer`` with a causal attention;
* reuse is switched off with :func:`prefix_reuse` (``with prefix_reuse(False): ...``), which
  the benchmarks use to measure before/after in one process.

:func:`residual_after_row_prefixes` serves the other case: rows whose first tokens differ
from row to row but stay fixed while what follows them is optimized (the prompt before an
appended soft prompt); each row's prefix runs once into a key/value cache that is kept across
the optimization's steps.

Example:
    >>> import torch
    >>> from factlens.testing import tiny_model
    >>> m = tiny_model()
    >>> toks = torch.tensor([[1, 5, 6, 7, 8, 9, 10], [1, 5, 6, 7, 8, 11, 12]])
    >>> resid, p = residual_after_prefix(m, toks, first_read=5)
    >>> p, tuple(resid.shape)
    (5, (2, 2, 32))
    >>> plain = m(toks, stop_at_layer=m.cfg.n_layers)
    >>> bool(torch.allclose(resid, plain[:, p:], atol=1e-5))
    True
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["residual_after_prefix", "residual_after_row_prefixes", "row_prefix_reuse_supported", "common_prefix_len",
           "prefix_reuse", "row_prefix_reuse", "prefix_reuse_enabled", "MIN_PREFIX"]

#: Shortest common prefix (tokens, BOS included) worth a separate pass.
MIN_PREFIX = 4

_ENABLED: ContextVar[bool] = ContextVar("factlens_prefix_reuse", default=True)
_ROWS_ENABLED: ContextVar[bool] = ContextVar("factlens_row_prefix_reuse", default=True)


@contextmanager
def prefix_reuse(enabled: bool) -> Iterator[None]:
    """Switch shared-prefix reuse on or off inside the block (default: on). Results are equal
    either way up to floating-point summation order; this exists to measure and test that."""
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


@contextmanager
def row_prefix_reuse(enabled: bool) -> Iterator[None]:
    """Switch :func:`residual_after_row_prefixes` off (or on) inside the block, leaving shared-prefix
    reuse as it is; results are equal either way up to float summation order (the benchmarks
    measure the two against each other). ``prefix_reuse(False)`` switches both off."""
    token = _ROWS_ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ROWS_ENABLED.reset(token)


def prefix_reuse_enabled() -> bool:
    """Whether :func:`residual_after_prefix` may reuse prefixes in the current context."""
    return _ENABLED.get()


def common_prefix_len(tokens: Tensor, lengths: Tensor | None = None) -> int:
    """Number of leading positions on which every row of ``tokens`` agrees (within each row's length).

    Example:
        >>> common_prefix_len(torch.tensor([[1, 2, 3, 0], [1, 2, 4, 5]]), torch.tensor([3, 4]))
        2
    """
    if tokens.shape[0] == 0:
        return 0
    n = tokens.shape[1] if lengths is None else int(lengths.min())
    same = (tokens[:, :n] == tokens[:1, :n]).all(0)
    diff = (~same).nonzero()
    return int(diff[0, 0]) if len(diff) else n


_POSITIONWISE = "_factlens_positionwise"


def mark_positionwise(fn):
    """Declare the hook ``fn`` position-wise: its output at each position depends only on that
    position's values, so splitting a batch into a prefix pass and the rest stays exact, and
    its presence does not switch reuse off (the factored LoRA hooks). Returns ``fn``."""
    setattr(fn, _POSITIONWISE, True)
    return fn


def is_positionwise_hook(fn) -> bool:
    """Whether ``fn`` was declared position-wise by :func:`mark_positionwise`, directly or as the
    hook that TransformerLens's ``HookPoint.add_hook`` wraps (its ``full_hook`` closure, the way
    ``model.hooks(fwd_hooks=...)`` attaches the projection hooks of :mod:`factlens.components`).
    Only that wrapper is looked into: another closure that merely holds a marked function may
    still read particular positions."""
    if getattr(fn, _POSITIONWISE, False):
        return True
    code = getattr(fn, "__code__", None)
    if (getattr(fn, "__module__", None) != "transformer_lens.hook_points"
            or not getattr(fn, "__qualname__", "").endswith("add_hook.<locals>.full_hook")
            or code is None or "hook" not in code.co_freevars or "self" not in code.co_freevars):
        return False
    cells = dict(zip(code.co_freevars, fn.__closure__ or ()))
    try:
        inner, point = cells["hook"].cell_contents, cells["self"].cell_contents
    except ValueError:  # an empty cell
        return False
    return bool(getattr(inner, _POSITIONWISE, False)) and getattr(point, "hook_conversion", None) is None


#: The hook tables of a ``torch.nn.Module`` (the ``with_kwargs`` and full backward variants live in the same tables).
_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
#: torch's global hooks (``register_module_forward_hook`` ...), called for every module.
_GLOBAL_HOOK_TABLES = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                       "_global_backward_pre_hooks")


def _has_hooks(model) -> bool:
    """Whether a hook that might read or write particular positions is attached: any forward,
    forward-pre or backward hook on any module of ``model`` (its TransformerLens hook points
    included) or registered globally with torch. Such a hook would see the prefix pass and the
    suffix pass each with their own position indices, so reuse must be off. Hooks declared
    position-wise with :func:`mark_positionwise` (the factored LoRA hooks) keep the split exact
    and are not counted."""
    if getattr(model, "hook_dict", None) is None:
        return True  # not a HookedTransformer: do not guess
    from torch.nn.modules import module as torch_module

    tables = [getattr(torch_module, t, None) for t in _GLOBAL_HOOK_TABLES]
    for m in model.modules():
        d = m.__dict__
        tables.extend(d[t] for t in _HOOK_TABLES if d.get(t))
    return any(not is_positionwise_hook(f) for table in tables if table for f in table.values())


def _supported(model) -> bool:
    cfg = getattr(model, "cfg", None)
    if cfg is None or getattr(cfg, "attention_dir", "causal") != "causal" or getattr(cfg, "n_devices", 1) != 1:
        return False
    if getattr(cfg, "positional_embedding_type", None) not in ("standard", "rotary"):
        return False
    if getattr(cfg, "use_dynamic_ntk_rope", False) or getattr(cfg, "use_logn_attn", False):
        return False
    from transformer_lens import HookedTransformer

    return isinstance(model, HookedTransformer) and not _has_hooks(model)


def residual_after_prefix(model, tokens: Tensor, *, first_read: int, lengths: Tensor | None = None,
                          stop_at_layer: int | None = None, hooks: Callable[[int], list] | None = None,
                          min_prefix: int = MIN_PREFIX) -> tuple[Tensor, int]:
    """Residual stream of right-padded rows from position ``p`` on, where ``p`` is the common
    prefix that was run once.

    Args:
        model: A ``HookedTransformer``.
        tokens: ``[batch, pos]`` right-padded token ids.
        first_read: The smallest position the caller will read (or a hook will change); the
            prefix never covers it.
        lengths: Real tokens per row (``None``: all positions count); padding never joins the prefix.
        stop_at_layer: As in ``HookedTransformer.forward`` (``None``: after the last block,
            before the final norm: ``n_layers``).
        hooks: ``hooks(p)`` returns ``[(hook_name, fn), ...]`` to attach while the rows from
            ``p`` on run (their activations' position ``t`` is position ``p + t``); the
            prefix pass runs without them, so they must not need positions before ``first_read``.
        min_prefix: Shortest prefix worth a separate pass.

    Returns:
        ``(resid, p)``: ``resid[:, t]`` is the residual at position ``p + t`` (``p = 0``: the
        plain forward pass ``model(tokens, stop_at_layer=...)``).
    """
    stop = _stop(model, stop_at_layer)
    p = 0
    if tokens.shape[0] > 1 and prefix_reuse_enabled() and _supported(model):
        p = min(common_prefix_len(tokens, lengths), int(first_read))
    if p < max(1, min_prefix) or p >= tokens.shape[1] or stop == 0:
        p = 0  # stop 0 runs no block: an empty key/value cache would put the rows at position 0 (learned positions)
    fwd_hooks = hooks(p) if hooks is not None else []

    def attached():
        return model.hooks(fwd_hooks=fwd_hooks) if fwd_hooks else nullcontext()

    if p == 0:
        with attached():
            return model(tokens, stop_at_layer=stop), 0
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    b, device = tokens.shape[0], tokens.device
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
    model(tokens[:1, :p], past_kv_cache=cache, attention_mask=torch.ones(1, p, dtype=torch.long, device=device),
          stop_at_layer=stop)
    for entry in cache.entries:  # the one prefix row serves every prompt (a view, not a copy)
        entry.past_keys = entry.past_keys.expand(b, -1, -1, -1)
        entry.past_values = entry.past_values.expand(b, -1, -1, -1)
    cache.previous_attention_mask = cache.previous_attention_mask.expand(b, -1)
    cache.freeze()
    rest = tokens[:, p:]
    with attached():
        resid = model(rest, past_kv_cache=cache, attention_mask=torch.ones(rest.shape, dtype=torch.long, device=device),
                      stop_at_layer=stop)
    return resid, p


def _stop(model, stop_at_layer: int | None) -> int:
    """``stop_at_layer`` as a block count in ``0..n_layers`` (``None``: ``n_layers``; negative: from the end,
    as ``HookedTransformer.forward`` reads it, so that ``-n_layers`` is the embedding's stop 0)."""
    n = model.cfg.n_layers
    stop = n if stop_at_layer is None else int(stop_at_layer)
    stop = n + stop if stop < 0 else stop
    if not 0 <= stop <= n:
        raise ValueError(f"stop_at_layer must be in -{n}..{n} for a model of {n} blocks, got {stop_at_layer}")
    return stop


def row_prefix_reuse_supported(model) -> bool:
    """Whether :func:`residual_after_row_prefixes` may be used here (reuse switched on, a causal
    ``HookedTransformer`` without position-reading hooks); otherwise run the plain forward pass."""
    return prefix_reuse_enabled() and _ROWS_ENABLED.get() and _supported(model)


def _row_prefix_kv(model, tokens: Tensor, rows: list[int], cuts: list[int], stop: int,
                   store: dict | None) -> list[tuple[Tensor, Tensor]]:
    """Per layer ``(keys, values)`` ``[len(rows), max cut, heads, d_head]`` of each row's
    ``tokens[i, :cuts[i]]`` (zeros after a shorter row's cut), computed without gradient; rows
    found in ``store`` are taken from it, new ones added. (TransformerLens caches keys before
    the rotary embedding, which it applies at the positions the attention mask counts.)"""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    keys = [(tuple(tokens[i, : cuts[i]].tolist()), stop) for i in rows]
    store = {} if store is None else store
    missing = [k for k in dict.fromkeys(keys) if k not in store]
    for n in sorted({len(k[0]) for k in missing}):  # one pass per prefix length, no padding
        same = [k for k in missing if len(k[0]) == n]
        toks = torch.tensor([k[0] for k in same], dtype=tokens.dtype, device=tokens.device)
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, len(same))
        with torch.no_grad():
            model(toks, past_kv_cache=cache, attention_mask=torch.ones(toks.shape, dtype=torch.long, device=toks.device),
                  stop_at_layer=stop)
        for j, k in enumerate(same):
            store[k] = [(e.past_keys[j], e.past_values[j]) for e in cache.entries[:stop]]
    width = max(len(k[0]) for k in keys)

    def padded(x: Tensor) -> Tensor:
        return torch.nn.functional.pad(x, (0, 0, 0, 0, 0, width - x.shape[0]))

    per_row = [store[k] for k in keys]
    return [(torch.stack([padded(r[layer][0]) for r in per_row]), torch.stack([padded(r[layer][1]) for r in per_row]))
            for layer in range(stop)]


def _local_window(model) -> int | None:
    """The sliding window of the model's local attention layers (``None``: no local layers)."""
    cfg = model.cfg
    local = getattr(cfg, "use_local_attn", False) or "local" in (getattr(cfg, "attn_types", None) or ())
    return int(cfg.window_size) if local and getattr(cfg, "window_size", None) else None


def residual_after_row_prefixes(model, tokens: Tensor, *, cuts: Sequence[int], lengths: Tensor | None = None,
                                stop_at_layer: int | None = None, hooks: Callable[[], list] | None = None,
                                store: dict | None = None) -> tuple[Tensor, Tensor]:
    """Residual stream of right-padded rows from each row's own ``cuts[i]`` on; the tokens before
    it are constants whose keys and values are computed once (and kept in ``store``).

    Where :func:`residual_after_prefix` runs the prefix all rows *share* once, this serves rows
    whose first ``cuts[i]`` tokens are fixed but differ from row to row, and whose later
    positions are trained or patched: an appended soft prompt is optimized for 25 steps on the
    same facts, and the prompt before it is the same at every step. All rows run together from
    their cuts, attending to their own cached keys and values: a shorter prefix is padded, the
    padding masked out, and the rotary or learned positions continue from each row's cut
    (TransformerLens counts positions through the attention mask). Only where a sliding-window
    layer could see the padding (padded length beyond its window) are the rows run in groups of
    equal cut. The result equals the plain forward pass up to float summation order. **No
    gradient reaches the positions before the cut**: use it only where what is differentiated
    enters after it (the soft vectors), never to train weights.

    Args:
        model: A ``HookedTransformer`` (:func:`row_prefix_reuse_supported` must be true).
        tokens: ``[batch, pos]`` right-padded token ids.
        cuts: Per row, the first position that is run (and may be changed by ``hooks`` or read).
        lengths: Real tokens per row (``None``: all positions count).
        stop_at_layer: As in ``HookedTransformer.forward`` (``None``: ``n_layers``).
        hooks: ``hooks()`` returns ``[(hook_name, fn), ...]`` attached while rows run from their
            cut (activation position ``t`` is row ``i``'s position ``cuts[i] + t``; the rows of
            one pass are in the order of ``tokens``).
        store: A dict to keep the row prefixes' keys and values between calls (keyed by their
            tokens); ``None``: computed for this call only.

    Returns:
        ``(resid, offsets)``: ``resid[i, t]`` is the residual of row ``i`` at position
        ``offsets[i] + t`` (``offsets`` = ``cuts``); positions past a row's length are padding.

    Example:
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> toks = torch.tensor([[1, 5, 6, 7, 8, 9], [1, 7, 6, 5, 8, 9]])
        >>> resid, off = residual_after_row_prefixes(m, toks, cuts=[3, 4])
        >>> plain = m(toks, stop_at_layer=m.cfg.n_layers)
        >>> off.tolist(), bool(torch.allclose(resid[1, :2], plain[1, 4:], atol=1e-5))
        ([3, 4], True)
    """
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    stop = _stop(model, stop_at_layer)
    b, n_pos = tokens.shape
    cuts = [int(c) for c in cuts]
    if len(cuts) != b or any(not 0 < c < n_pos for c in cuts):
        raise ValueError(f"cuts must give one position in 1..{n_pos - 1} per row ({b} rows), got {cuts}")
    lens = [n_pos] * b if lengths is None else [int(x) for x in lengths]
    width = max(max(lens[i] - cuts[i] for i in range(b)), 1)
    if stop == 0:  # no block runs, so no key/value cache would place the rows: the embedding, row by row
        if hooks is not None:
            raise ValueError("stop_at_layer=0 with hooks: the rows' positions differ from the plain pass's "
                             "there; run model(tokens, stop_at_layer=0) under your hooks instead")
        full = torch.nn.functional.pad(model(tokens, stop_at_layer=0), (0, 0, 0, width))
        return torch.stack([full[i, cuts[i]: cuts[i] + width] for i in range(b)]), torch.tensor(cuts)
    window = _local_window(model)
    together = window is None or max(cuts) + width <= window
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(cuts):
        groups.setdefault(0 if together else c, []).append(i)
    wide = torch.nn.functional.pad(tokens, (0, width), value=int(tokens[0, 0]))  # past the end: never read
    pieces, order = [], []
    for rows in groups.values():
        mc = max(cuts[i] for i in rows)
        cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, len(rows))
        for entry, (k, v) in zip(cache.entries, _row_prefix_kv(model, tokens, rows, cuts, stop, store)):
            entry.past_keys, entry.past_values = k, v
        cache.previous_attention_mask = torch.tensor([[1] * cuts[i] + [0] * (mc - cuts[i]) for i in rows],
                                                     dtype=torch.int, device=tokens.device)
        cache.freeze()
        n = max(max(lens[i] - cuts[i] for i in rows), 1)
        rest = torch.stack([wide[i, cuts[i] : cuts[i] + n] for i in rows])
        fwd_hooks = hooks() if hooks is not None else []
        with (model.hooks(fwd_hooks=fwd_hooks) if fwd_hooks else nullcontext()):
            resid = model(rest, past_kv_cache=cache, attention_mask=torch.ones(rest.shape, dtype=torch.long,
                          device=tokens.device), stop_at_layer=stop)
        pieces.append(torch.nn.functional.pad(resid, (0, 0, 0, width - resid.shape[1])))
        order += rows
    out = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    if order == list(range(b)):
        return out, torch.tensor(cuts)
    inverse = torch.empty(b, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(b)
    return out[inverse.to(out.device)], torch.tensor(cuts)
