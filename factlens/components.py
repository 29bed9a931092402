"""Model components, hook names and component masks.

This is the only module that builds TransformerLens hook-name strings. Every other module
asks a :class:`Component` (or the helpers :func:`resid_hook`, :func:`attn_hook`,
:func:`mlp_hook`) for the names it needs.

Grouped-query attention: in a GQA model (``n_key_value_heads < n_heads``) the key and value
weights of a group are shared by all heads of the group. A head mask therefore **includes
the shared K/V slice of its group** (``_W_K[g]``, ``_W_V[g]``, ``_b_K[g]``, ``_b_V[g]`` with
``g = head // (n_heads // n_key_value_heads)``); the shared slice is counted once in
:meth:`Mask.n_params` however many heads of the group are selected. Editing a head of a
group can thus also change the keys/values seen by the other heads of that group, which is
unavoidable without un-grouping the weights. ``b_O`` (shared by all heads) belongs to no
head and is never masked.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from factlens.model_checks import check_supported

__all__ = [
    "Component",
    "Mask",
    "ModelShape",
    "resolve_components",
    "COMPONENT_KEYWORDS",
    "resid_hook",
    "attn_hook",
    "mlp_hook",
    "embed_hook",
    "final_norm_hook",
    "project_out_hook",
    "project_out_everywhere_hooks",
]

Kind = Literal["head", "mlp", "neuron"]

# --- hook names (the single place where hook strings are built) ----------------------


def resid_hook(layer: int, where: Literal["pre", "mid", "post"] = "pre") -> str:
    """Hook name of the residual stream at ``layer`` (``blocks.{layer}.hook_resid_{where}``)."""
    return f"blocks.{layer}.hook_resid_{where}"


def attn_hook(layer: int, name: Literal["z", "q", "k", "v", "pattern", "result", "attn_scores"] = "z") -> str:
    """Hook name of an attention activation, e.g. ``blocks.3.attn.hook_z``."""
    return f"blocks.{layer}.attn.hook_{name}"


def mlp_hook(layer: int, name: Literal["out", "post", "pre", "in"] = "out") -> str:
    """Hook name of an MLP activation: ``out`` is ``blocks.L.hook_mlp_out``, ``post``/``pre`` are neurons."""
    if name == "out":
        return f"blocks.{layer}.hook_mlp_out"
    if name == "in":
        return f"blocks.{layer}.hook_mlp_in"
    return f"blocks.{layer}.mlp.hook_{name}"


def attn_out_hook(layer: int) -> str:
    """Hook name of the summed attention output of a layer."""
    return f"blocks.{layer}.hook_attn_out"


def embed_hook() -> str:
    """Hook name of the token embeddings."""
    return "hook_embed"


def final_norm_hook() -> str:
    """Hook name of the final normalization scale (or the final residual if there is none)."""
    return "ln_final.hook_normalized"


def _projection(direction: torch.Tensor):
    """The hook ``x -> x - (x . d) d`` (``d`` the unit ``direction``), declared position-wise so that
    the shared-prefix forward pass stays on (:func:`factlens.prefix.mark_positionwise`)."""
    from factlens.prefix import mark_positionwise

    d = direction.detach().float()
    n = float(d.norm())
    if not n > 0:
        raise ValueError("project_out_hook needs a non-zero direction")
    d = d / n

    def hook(act, hook):
        u = d.to(device=act.device, dtype=act.dtype)
        return act - (act @ u).unsqueeze(-1) * u

    return mark_positionwise(hook)


def project_out_hook(layer: int, direction: torch.Tensor, where: Literal["pre", "mid", "post"] = "post"):
    """``(hook name, hook)`` removing the component along ``direction`` from the residual stream at ``layer``.

    The hook maps ``x`` to ``x - (x . d) d`` (``d = direction / |direction|``) at every
    position; use it with ``model.hooks(fwd_hooks=[...])`` so that it is always removed.

    Example:
        >>> name, fn = project_out_hook(2, torch.tensor([0.0, 3.0]))
        >>> name, fn(torch.tensor([[[1.0, 5.0]]]), None).tolist()
        ('blocks.2.hook_resid_post', [[[1.0, 0.0]]])
    """
    return resid_hook(layer, where), _projection(direction)


def project_out_everywhere_hooks(direction: torch.Tensor, cfg) -> list[tuple[str, object]]:
    """Hooks removing ``direction`` from every residual-stream read of a model (directional ablation).

    Arditi et al. (2024) ablate a direction from every layer's block input and from what each
    attention and MLP layer writes, so that it appears nowhere in the stream. Hooks at every
    place the stream is *read* do the same: each layer's ``resid_pre`` (what attention reads,
    and the MLP in parallel-attention models), ``resid_mid`` where the model has one (what the
    MLP reads) and the last layer's ``resid_post`` (what the unembedding reads). On pre-norm
    models this equals projecting the embeddings and every attention/MLP output (projection is
    linear and idempotent); on post-norm models it also removes what a normalization brings back.

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(n_layers=2, attn_only=False, parallel_attn_mlp=False)
        >>> [n for n, _ in project_out_everywhere_hooks(torch.tensor([1.0, 0.0]), cfg)]  # doctest: +NORMALIZE_WHITESPACE
        ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_mid', 'blocks.1.hook_resid_pre', 'blocks.1.hook_resid_mid',
         'blocks.1.hook_resid_post']
    """
    fn = _projection(direction)
    mid = not getattr(cfg, "attn_only", False) and not getattr(cfg, "parallel_attn_mlp", False)
    n = int(cfg.n_layers)
    names = [resid_hook(layer, w) for layer in range(n) for w in (("pre", "mid") if mid else ("pre",))]
    return [(name, fn) for name in names + [resid_hook(n - 1, "post")]]


def param_name(layer: int, module: Literal["attn", "mlp"], name: str) -> str:
    """Parameter name inside a HookedTransformer, e.g. ``blocks.3.attn.W_Q``."""
    return f"blocks.{layer}.{module}.{name}"


# --- model shape -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """The architecture facts that component bookkeeping needs (no weights).

    Example:
        >>> s = ModelShape(n_layers=2, n_heads=4, n_kv_heads=2, d_model=16, d_head=4, d_mlp=32, gated_mlp=True)
        >>> s.group_size
        2
    """

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    gated_mlp: bool = False
    attn_only: bool = False
    #: TransformerLens's grouped-query attention module, whose K/V parameters are ``_W_K``, ``_W_V``,
    #: ``_b_K``, ``_b_V``: every model whose config sets ``n_key_value_heads``, also where it equals
    #: ``n_heads`` (as TransformerLens's Gemma-7B config does)
    grouped_kv_params: bool = False

    @property
    def grouped(self) -> bool:
        """Whether the K/V parameters are the grouped-query ones (``_W_K`` ...)."""
        return self.grouped_kv_params or self.n_kv_heads != self.n_heads

    @classmethod
    def from_dict(cls, d: dict) -> "ModelShape":
        """Inverse of :meth:`to_dict`; files written before ``grouped_kv_params`` existed get
        ``n_kv_heads != n_heads``, what :attr:`grouped` meant then. Files written before
        2026-12-03 also hold ``has_bias`` (always ``True``, whatever the model: it was never read
        from the model nor used), which is dropped."""
        d = dict(d)
        d.pop("has_bias", None)
        d.setdefault("grouped_kv_params", d["n_kv_heads"] != d["n_heads"])
        return cls(**d)

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    @classmethod
    def of(cls, model_or_cfg) -> "ModelShape":
        """Read the shape of a ``HookedTransformer`` or its config.

        Raises:
            TypeError: ``model_or_cfg`` is neither (a model name, a plain ``nn.Module``, ``None``).
        """
        cfg = getattr(model_or_cfg, "cfg", model_or_cfg)
        if not all(hasattr(cfg, a) for a in ("n_layers", "n_heads", "d_model", "d_head")):
            raise TypeError(f"expected a TransformerLens HookedTransformer (or its config), got "
                            f"{type(model_or_cfg).__name__}: {str(model_or_cfg)[:80]!r}; load one with "
                            "factlens.load_model(...) or HookedTransformer.from_pretrained(...)")
        check_supported(cfg)
        n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        return cls(
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            n_kv_heads=n_kv,
            d_model=cfg.d_model,
            d_head=cfg.d_head,
            d_mlp=cfg.d_mlp or 0,
            gated_mlp=bool(getattr(cfg, "gated_mlp", False)),
            attn_only=bool(getattr(cfg, "attn_only", False)),
            grouped_kv_params=getattr(cfg, "n_key_value_heads", None) is not None,
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def all_heads(self) -> list["Component"]:
        return [Component("head", l, h) for l in range(self.n_layers) for h in range(self.n_heads)]

    def all_mlps(self) -> list["Component"]:
        return [] if self.attn_only else [Component("mlp", l) for l in range(self.n_layers)]

    def all_components(self) -> list["Component"]:
        """Every head and MLP in the canonical order: layer by layer, a layer's heads then its MLP.

        This is the order of every localization's scores (and of :class:`Mask` iteration).
        """
        out: list[Component] = []
        for l in range(self.n_layers):
            out += [Component("head", l, h) for h in range(self.n_heads)]
            if not self.attn_only:
                out.append(Component("mlp", l))
        return out


# --- components ------------------------------------------------------------------------

_LABEL_RE = re.compile(r"^L(\d+)(?:H(\d+)|\.mlp|\.N(\d+))$")


@dataclass(frozen=True, order=True)
class Component:
    """An attention head, an MLP layer or an MLP neuron.

    Attributes:
        kind: ``"head"``, ``"mlp"`` or ``"neuron"``.
        layer: Layer index.
        index: Head index for heads, neuron index for neurons, ``None`` for MLPs.

    Example:
        >>> Component("head", 3, 2).label, Component.parse("L5.mlp")
        ('L3H2', Component(kind='mlp', layer=5, index=None))
        >>> Component("head", 3, 2).hook_name
        'blocks.3.attn.hook_z'
    """

    kind: str
    layer: int
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("head", "mlp", "neuron"):
            raise ValueError(f"Component kind must be 'head', 'mlp' or 'neuron', got {self.kind!r}")
        for name in ("layer", "index"):  # a float index gave labels like L1.0H2.0 that Mask.load cannot read
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise TypeError(f"Component {name} must be an int, got {v!r}")
            if isinstance(v, np.integer):
                object.__setattr__(self, name, int(v))
        if self.layer < 0:
            raise ValueError(f"layer must be >= 0, got {self.layer}")
        if self.kind == "mlp" and self.index is not None:
            raise ValueError("an MLP component has no index; use kind='neuron' for single neurons")
        if self.kind in ("head", "neuron") and (self.index is None or self.index < 0):
            raise ValueError(f"a {self.kind} component needs a non-negative index")

    # labels
    @property
    def label(self) -> str:
        if self.kind == "head":
            return f"L{self.layer}H{self.index}"
        if self.kind == "mlp":
            return f"L{self.layer}.mlp"
        return f"L{self.layer}.N{self.index}"

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, label: str) -> "Component":
        """Parse ``"L3H2"``, ``"L5.mlp"`` or ``"L5.N123"``."""
        if not isinstance(label, str):  # an int failed with "'int' object has no attribute 'strip'"
            raise TypeError(f"a component label is a string such as 'L3H2', 'L5.mlp' or 'L5.N123', got {label!r} "
                            f"of type {type(label).__name__}")
        m = _LABEL_RE.match(label.strip())
        if not m:
            raise ValueError(f"cannot parse component label {label!r}; expected 'L3H2', 'L5.mlp' or 'L5.N123'")
        layer = int(m.group(1))
        if m.group(2) is not None:
            return cls("head", layer, int(m.group(2)))
        if m.group(3) is not None:
            return cls("neuron", layer, int(m.group(3)))
        return cls("mlp", layer)

    # hooks
    @property
    def hook_name(self) -> str:
        """The hook whose activation is this component's output (heads: ``hook_z``, index ``[:, :, h]``)."""
        if self.kind == "head":
            return attn_hook(self.layer, "z")
        if self.kind == "mlp":
            return mlp_hook(self.layer, "out")
        return mlp_hook(self.layer, "post")

    def select(self, activation: torch.Tensor) -> torch.Tensor:
        """This component's slice of the activation at :attr:`hook_name` (``[batch, pos, ...]``)."""
        if self.kind == "head":
            return activation[:, :, self.index]
        if self.kind == "neuron":
            return activation[:, :, self.index]
        return activation

    # parameters
    def param_slices(self, shape: ModelShape) -> dict[str, tuple]:
        """Parameter name -> index tuple selecting this component's entries.

        Heads: ``W_Q[h], b_Q[h], W_O[h]`` and the (possibly shared) ``W_K/W_V/b_K/b_V`` slice of
        the head's K/V group (named ``_W_K`` etc. in grouped-query models). MLPs: whole
        ``W_in, W_gate, W_out, b_in, b_out``. Neurons: column ``n`` of ``W_in/W_gate``, ``b_in[n]``
        and row ``n`` of ``W_out``.
        """
        L = self.layer
        if self.kind == "head":
            if self.index >= shape.n_heads or L >= shape.n_layers:
                raise ValueError(f"{self.label} does not exist in a model with {shape.n_layers} layers x {shape.n_heads} heads")
            h = self.index
            kv = h // shape.group_size
            pre = "_" if shape.grouped else ""
            out = {
                param_name(L, "attn", "W_Q"): (h,),
                param_name(L, "attn", "b_Q"): (h,),
                param_name(L, "attn", "W_O"): (h,),
                param_name(L, "attn", f"{pre}W_K"): (kv,),
                param_name(L, "attn", f"{pre}W_V"): (kv,),
                param_name(L, "attn", f"{pre}b_K"): (kv,),
                param_name(L, "attn", f"{pre}b_V"): (kv,),
            }
            return out
        if shape.attn_only:
            raise ValueError(f"{self.label}: the model is attention-only and has no MLPs")
        if L >= shape.n_layers:
            raise ValueError(f"{self.label} does not exist in a model with {shape.n_layers} layers")
        names = ["W_in", "W_out", "b_in", "b_out"] + (["W_gate"] if shape.gated_mlp else [])
        if self.kind == "mlp":
            return {param_name(L, "mlp", n): (slice(None),) for n in names}
        n = self.index
        if n >= shape.d_mlp:
            raise ValueError(f"{self.label}: neuron index out of range (d_mlp={shape.d_mlp})")
        out = {
            param_name(L, "mlp", "W_in"): (slice(None), n),
            param_name(L, "mlp", "b_in"): (n,),
            param_name(L, "mlp", "W_out"): (n,),
        }
        if shape.gated_mlp:
            out[param_name(L, "mlp", "W_gate")] = (slice(None), n)
        return out

    @property
    def mechanism_layer(self) -> int:
        return self.layer


# --- component selection -------------------------------------------------------------------

#: The keyword spellings of :func:`resolve_components` -> the kind they select (``None``: heads and MLPs).
COMPONENT_KEYWORDS: dict[str, str | None] = {"all": None, "heads": "head", "head": "head", "mlps": "mlp", "mlp": "mlp"}

_SPELLINGS = ("None or 'all' (every head and MLP), 'heads', 'mlps', one label such as 'L3H2' / 'L5.mlp', "
              "or a list of Components / labels")


def resolve_components(shape, spec=None, *, neurons: bool = False, what: str = "components") -> list[Component]:
    """The components a ``components=`` option names, checked against the model.

    Every localization method resolves its component option here, so all accept the same
    spellings and list components in the same order.

    Args:
        shape: A :class:`ModelShape` (or a ``HookedTransformer`` / its config).
        spec: ``None`` or ``"all"``: every head and MLP; ``"heads"`` / ``"mlps"`` (also
            ``"head"`` / ``"mlp"``): every head / every MLP, all in the canonical order of
            :meth:`ModelShape.all_components` (layer by layer, heads then the MLP). A
            :class:`Component`, a label (``"L3H2"``, ``"L5.mlp"``) or a list of them: those
            components, in the order given.
        neurons: Accept single neurons (``"L5.N123"``); the patching methods score heads and
            MLPs only.
        what: The option's name, for error messages (``"senders"``, ``"receivers"``...).

    Returns:
        The components, without duplicates (a duplicate raises).

    Raises:
        ValueError: An unknown spelling or label (the message lists the valid spellings), an
            empty selection, a duplicate, a neuron where ``neurons=False``, or a component
            the model does not have.
        TypeError: An item that is neither a :class:`Component` nor a label.

    Example:
        >>> s = ModelShape(n_layers=2, n_heads=2, n_kv_heads=2, d_model=8, d_head=4, d_mlp=16)
        >>> [c.label for c in resolve_components(s)]
        ['L0H0', 'L0H1', 'L0.mlp', 'L1H0', 'L1H1', 'L1.mlp']
        >>> [c.label for c in resolve_components(s, "mlps")], resolve_components(s, ["L1H0", "L0.mlp"])[1].label
        (['L0.mlp', 'L1.mlp'], 'L0.mlp')
    """
    shape = shape if isinstance(shape, ModelShape) else ModelShape.of(shape)
    if spec is None or (isinstance(spec, str) and spec in COMPONENT_KEYWORDS):
        kind = COMPONENT_KEYWORDS[spec or "all"]
        out = [c for c in shape.all_components() if kind is None or c.kind == kind]
        if not out:
            raise ValueError(f"{what}={spec!r}: the model is attention-only and has no MLPs")
        return out
    items = [spec] if isinstance(spec, (str, Component)) else spec
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"{what} must be {_SPELLINGS}; got {spec!r}") from None
    if not items:
        raise ValueError(f"{what} is empty; pass {_SPELLINGS}")
    out = [_checked(_as_component(it, what), shape, neurons, what) for it in items]
    dup = sorted(c.label for c, n in Counter(out).items() if n > 1)
    if dup:
        raise ValueError(f"{what} contains duplicates: {dup}")
    return out


def _as_component(item, what: str) -> Component:
    if isinstance(item, Component):
        return item
    if not isinstance(item, str):
        raise TypeError(f"{what} must be {_SPELLINGS}; got the item {item!r}")
    try:
        return Component.parse(item)
    except ValueError:
        raise ValueError(f"{what}: cannot parse component label {item!r}; valid spellings: {_SPELLINGS}") from None


def _checked(c: Component, shape: ModelShape, neurons: bool, what: str) -> Component:
    if c.kind == "neuron" and not neurons:
        raise ValueError(f"{what}: {c.label} is a neuron; this method scores heads and MLP layers, not single neurons")
    if c.layer >= shape.n_layers or (c.kind == "head" and c.index >= shape.n_heads):
        raise ValueError(f"{what}: {c.label} does not exist in a model with {shape.n_layers} layers x "
                         f"{shape.n_heads} heads")
    if c.kind != "head" and shape.attn_only:
        raise ValueError(f"{what}: {c.label} does not exist: the model is attention-only and has no MLPs")
    if c.kind == "neuron" and c.index >= shape.d_mlp:
        raise ValueError(f"{what}: {c.label} does not exist: neuron index out of range (d_mlp={shape.d_mlp})")
    return c


# Mask moved to factlens.mask (this module stays its public path); imported last: factlens.mask
# imports Component and ModelShape from here
from factlens.mask import Mask, _mask_components, is_saved_mask  # noqa: E402,F401
