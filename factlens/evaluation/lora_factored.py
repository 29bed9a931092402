"""LoRA computed as ``x @ A @ B`` beside the frozen weight instead of through ``W + A @ B``.

:func:`factlens.evaluation.lora.add_lora` with ``forward="factored"`` uses this module: the
model's weights are left as they are (no parametrization) and forward hooks add ``scale *
(x @ A) @ B`` to the output of each adapted matrix product, where ``x`` is that product's
input. The model computes ``x @ W + scale * (x @ A) @ B`` instead of ``x @ (W + scale * A @ B)``:
mathematically the same, different only in float rounding (summation order).

Why: the merged form builds every adapted weight matrix anew on each step and keeps it for the
backward pass (plus its gradient, a full matrix per weight). That is another copy of every block
matrix: 0.4 GB for Gemma 3 270M in float32, 16 GB for Gemma-2-9B in bf16. The factored form keeps
only ``x @ A`` (tokens x rank) per matrix. It needs fewer operations when
``tokens * (d_in + d_out) < d_in * d_out`` per pass, i.e. for wide models; at rank 512 on a
640-wide model it needs more (docs/performance.md has the measured trade).

Where each product's input and output are found (TransformerLens 3.x):

* ``W_Q``/``W_K``/``W_V`` (and the grouped ``_W_K``/``_W_V``): inputs are the attention
  module's ``query_input``/``key_input``/``value_input``; outputs are ``hook_q``/``hook_k``/
  ``hook_v`` (before QK-norm and rotary, so the delta goes where the weight's product goes);
* ``W_O``: input is ``hook_z`` (heads flattened), output is the attention module's output;
* ``W_in``/``W_gate``: input is the MLP's input; outputs are ``hook_pre_linear``/``hook_pre``
  (gated MLP) or ``hook_pre`` (plain MLP, ``W_in``);
* ``W_out``: input is ``hook_post``, output is the MLP module's output.

The hooks are plain PyTorch hooks (TransformerLens's ``reset_hooks`` does not touch them) and
act on each position separately, so shared-prefix reuse (:mod:`factlens.prefix`) stays exact
and stays on. Architectures whose products are not found that way (split QKV inputs,
``use_attn_result``, 4-bit weights, layer-norm activations in a gated MLP, MoE) are refused
with a ValueError: use ``forward="merged"`` there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from factlens.evaluation.lora import reshape_delta
from factlens.prefix import mark_positionwise as _positionwise

__all__ = ["FactoredSite", "attach_factored"]

_KNOWN = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_gate", "W_out")


@dataclass
class FactoredSite:
    """One adapted matrix: its adapter parameters and where its product's input/output live."""

    full: str  # parameter name, e.g. "blocks.0.attn.W_Q"
    short: str  # "W_Q", "W_K" (also for _W_K), ...
    A: nn.Parameter
    B: nn.Parameter
    scale: float
    shape: tuple[int, ...]  # the weight's own shape
    handles: list[Any] = field(default_factory=list, repr=False)

    def delta(self) -> Tensor:
        """``scale * A @ B`` in the weight's own shape (as the merged form adds it)."""
        return reshape_delta((self.A @ self.B) * self.scale, self.short, self.shape)

    def apply(self, x: Tensor) -> Tensor:
        """``scale * (x @ A) @ B`` for inputs ``x`` ``[..., d_in]`` (in the adapter's dtype)."""
        return ((x.to(self.A.dtype) @ self.A) @ self.B) * self.scale

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _check_supported(model, module_name: str, module: nn.Module) -> None:
    from transformer_lens.components import GatedMLP, MLP  # type: ignore
    from transformer_lens.components.abstract_attention import AbstractAttention  # type: ignore

    cfg = getattr(model, "cfg", None)
    why = None
    if cfg is not None and getattr(cfg, "load_in_4bit", False):
        why = "4-bit weights"
    elif isinstance(module, AbstractAttention):
        if getattr(cfg, "use_split_qkv_input", False) or getattr(cfg, "use_attn_in", False):
            why = "split QKV / per-head attention inputs"
        elif getattr(cfg, "use_attn_result", False):
            why = "use_attn_result (per-head outputs)"
    elif type(module).forward is GatedMLP.forward:
        if cfg is not None and cfg.is_layer_norm_activation():
            why = "a layer-norm activation in the gated MLP (W_in is not used there)"
    elif type(module).forward is not MLP.forward:
        why = f"an MLP of type {type(module).__name__} (not TransformerLens's MLP or GatedMLP)"
    if why:
        raise ValueError(f"factored LoRA does not support {why} ({module_name}); use add_lora(..., forward='merged'), "
                         "and for the attacks that add LoRA set lora_forward='merged' in their configs: "
                         "EvalConfig(relearning={'lora_forward': 'merged'}, unrelated_finetune={'lora_forward': "
                         "'merged'}), or on the command line --eval relearning.lora_forward=merged "
                         "--eval unrelated_finetune.lora_forward=merged")


def _input_of(args: tuple, kwargs: dict, name: str, index: int) -> Tensor:
    return kwargs[name] if name in kwargs else args[index]


def _qkv_out(site: FactoredSite, state: dict, key: str) -> Callable:
    def hook(_hp, _inp, out: Tensor) -> Tensor:
        x = state[key]
        d = site.apply(x)  # [batch, pos, heads * d_head] of the adapter's matrix view
        n_rows = site.shape[0]  # heads of the stored weight (kv heads for _W_K / _W_V)
        d = d.reshape(*x.shape[:-1], n_rows, -1)
        if out.shape[-2] != n_rows:  # grouped weights used ungrouped: expand as W_K's property does
            d = torch.repeat_interleave(d, dim=-2, repeats=out.shape[-2] // n_rows)
        return out + d.to(out.dtype)

    return _positionwise(hook)


def _clear_after(module: nn.Module, state: dict, site: FactoredSite) -> None:
    """After ``module``'s forward (and after the hooks that read ``state``), drop the kept inputs:
    they reference the autograd graph of the pass."""

    def clear(_m, _inp, _out):
        state.clear()

    site.handles.append(module.register_forward_hook(_positionwise(clear)))


def _attach_attention(attn: nn.Module, sites: dict[str, FactoredSite]) -> None:
    state: dict[str, Tensor] = {}

    def pre(_m, args, kwargs):
        for i, key in enumerate(("query_input", "key_input", "value_input")):
            state[key] = _input_of(args, kwargs, key, i)

    first = next(iter(sites.values()))
    first.handles.append(attn.register_forward_pre_hook(_positionwise(pre), with_kwargs=True))
    _clear_after(attn, state, first)
    for short, key, hp in (("W_Q", "query_input", attn.hook_q), ("W_K", "key_input", attn.hook_k),
                           ("W_V", "value_input", attn.hook_v)):
        if short in sites:
            sites[short].handles.append(hp.register_forward_hook(_qkv_out(sites[short], state, key), prepend=True))
    if "W_O" in sites:
        site = sites["W_O"]

        def keep_z(_hp, _inp, z):
            state["z"] = z

        def add_o(_m, _inp, out):
            z = state["z"]
            return out + site.apply(z.reshape(*z.shape[:-2], -1)).to(out.dtype)

        site.handles.extend(_last_hook(attn, attn.hook_z, _positionwise(keep_z)))
        site.handles.append(attn.register_forward_hook(_positionwise(add_o), prepend=True))


def _last_hook(module: nn.Module, hook_point: nn.Module, fn: Callable) -> list:
    """Register ``fn`` as a forward hook of ``hook_point`` that runs after every other hook there,
    also after hooks added later (``model.hooks(...)``, ``run_with_hooks``: a patched or ablated
    ``hook_z`` / ``hook_post``), so that the adapter reads the activation the base weight reads.

    Returns the hook's handle and that of the ``module`` pre-hook that moves it to the end of
    the hook point's hooks at every call.
    """
    handle = hook_point.register_forward_hook(fn)

    def last(_m, _args):
        hooks = hook_point._forward_hooks
        if handle.id in hooks:
            hooks.move_to_end(handle.id)

    return [handle, module.register_forward_pre_hook(_positionwise(last))]


def _attach_mlp(mlp: nn.Module, sites: dict[str, FactoredSite]) -> None:
    from transformer_lens.components import GatedMLP  # type: ignore

    state: dict[str, Tensor] = {}

    def pre(_m, args, kwargs):
        state["x"] = _input_of(args, kwargs, "x", 0)

    def add_from(site: FactoredSite, key: str) -> Callable:
        def hook(_m, _inp, out):
            return out + site.apply(state[key]).to(out.dtype)

        return _positionwise(hook)

    first = next(iter(sites.values()))
    first.handles.append(mlp.register_forward_pre_hook(_positionwise(pre), with_kwargs=True))
    _clear_after(mlp, state, first)
    gated = type(mlp).forward is GatedMLP.forward
    outputs = {"W_gate": mlp.hook_pre, "W_in": mlp.hook_pre_linear} if gated else {"W_in": mlp.hook_pre}
    for short, hp in outputs.items():
        if short in sites:
            sites[short].handles.append(hp.register_forward_hook(add_from(sites[short], "x"), prepend=True))
    if "W_out" in sites:
        def keep_post(_hp, _inp, post):
            state["post"] = post

        sites["W_out"].handles.extend(_last_hook(mlp, mlp.hook_post, _positionwise(keep_post)))
        sites["W_out"].handles.append(mlp.register_forward_hook(add_from(sites["W_out"], "post"), prepend=True))


def attach_factored(model, sites: list[FactoredSite]) -> None:
    """Register the hooks of ``sites`` (grouped by their attention / MLP module) on ``model``.

    Raises:
        ValueError: A site's module is of a kind whose products cannot be hooked (see the module docstring).
    """
    from transformer_lens.components.abstract_attention import AbstractAttention  # type: ignore

    modules = dict(model.named_modules())
    by_module: dict[str, dict[str, FactoredSite]] = {}
    for s in sites:
        by_module.setdefault(s.full.rpartition(".")[0], {})[s.short] = s
    for name, group in by_module.items():
        unknown = sorted(set(group) - set(_KNOWN))
        if unknown:
            raise ValueError(f"factored LoRA adapts only {list(_KNOWN)} of attention and MLP blocks, not {unknown} "
                             f"({name}); use add_lora(..., forward='merged')")
        module = modules[name]
        _check_supported(model, name, module)
        if isinstance(module, AbstractAttention):
            _attach_attention(module, group)
        else:
            _attach_mlp(module, group)
