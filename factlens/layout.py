"""Weight memory layouts that spare TransformerLens a copy of every weight on every forward pass.

TransformerLens's gated MLP (Gemma, Llama) calls ``F.linear(x, W.T.contiguous())`` for
``W_gate``, ``W_in`` and ``W_out``, and attention rearranges ``W_O`` to ``[d_model, n_heads *
d_head]`` and makes it contiguous: each forward pass copies those weights (330 MB for
Gemma 3 270M), and a forward pass that will be differentiated keeps the copies alive until
the backward pass. :func:`linear_layout` stores those parameters so that the copy is a no-op:
same shape, same values, only the strides change (``W_in`` becomes the transpose of a
contiguous ``[d_mlp, d_model]`` tensor). The matrix products then get the very tensor they
used to get a copy of, so every result is **bitwise identical**; only the copies are gone.

The parameters stay ordinary ``nn.Parameter`` objects; code that needs contiguous memory
(``.view()``, ``safetensors.save_file`` of a state dict) must call ``.contiguous()`` first.
:func:`contiguous_layout` undoes the change. The runner applies it to the model it loads
(``Workspace``); factlens never changes the layout of a model you pass in.

Example:
    >>> import torch
    >>> from factlens.testing.shaped import gemma3_shaped
    >>> m = gemma3_shaped()
    >>> x = torch.tensor([[1, 5, 6, 7]])
    >>> before = m(x)
    >>> names = linear_layout(m)
    >>> names[:2], m.blocks[0].mlp.W_in.T.is_contiguous()
    (['blocks.0.attn.W_O', 'blocks.0.mlp.W_gate'], True)
    >>> bool(torch.equal(m(x), before))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_layout", "contiguous_layout"]


def _gated_mlp_names(model) -> list[str]:
    from transformer_lens.components import GatedMLP  # type: ignore

    out = []
    for mod_name, mod in model.named_modules():
        if type(mod).forward is GatedMLP.forward:  # exactly TransformerLens's gated MLP (its .T.contiguous())
            out += [f"{mod_name}.{w}" for w in ("W_gate", "W_in", "W_out") if isinstance(getattr(mod, w, None), Tensor)]
    return out


def _w_o_names(model) -> list[str]:
    from transformer_lens.components.abstract_attention import AbstractAttention  # type: ignore

    out = []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, AbstractAttention) and type(mod).forward is AbstractAttention.forward:
            W = getattr(mod, "W_O", None)
            if isinstance(W, torch.nn.Parameter) and W.dim() == 3 and not getattr(model.cfg, "load_in_4bit", False):
                out.append(f"{mod_name}.W_O")
    return out


def linear_layout(model) -> list[str]:
    """Re-store the gated-MLP weights and ``W_O`` of ``model`` so TransformerLens's per-forward copies are no-ops.

    Values, shapes, dtypes, devices and parameter objects are unchanged (each parameter's
    ``.data`` gets new strides). Idempotent.

    Returns:
        The names of the parameters whose layout changed (sorted).
    """
    changed = []
    with torch.no_grad():
        for name in _gated_mlp_names(model):
            p = model.get_parameter(name)
            if not p.T.is_contiguous():
                p.data = p.data.T.contiguous().T  # [in, out] as the transpose of a contiguous [out, in]
                changed.append(name)
        for name in _w_o_names(model):
            p = model.get_parameter(name)  # [n_heads, d_head, d_model] -> memory [d_model, n_heads, d_head]
            if not p.permute(2, 0, 1).is_contiguous():
                p.data = p.data.permute(2, 0, 1).contiguous().permute(1, 2, 0)
                changed.append(name)
    return sorted(changed)


def contiguous_layout(model) -> list[str]:
    """Make every parameter of ``model`` contiguous again (undoes :func:`linear_layout`); returns the names changed."""
    changed = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_contiguous():
                p.data = p.data.contiguous()
                changed.append(name)
    return sorted(changed)
