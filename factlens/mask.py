"""Component masks: the set of components a localization selects and an editor trains.

:class:`Mask` lived in :mod:`factlens.components` until 2026-12-06 and is still importable from
there; hook names stay built in that module alone (a mask asks its components for their
parameter slices).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch

from factlens.components import Component, ModelShape, _checked

__all__ = ["Mask", "is_saved_mask"]


def _mask_components(items) -> frozenset[Component]:
    """``Mask(items)``'s components: Components or labels (parsed), checked here.

    A bare label string was iterated letter by letter (``Mask("L1.mlp")``: six "components"), and
    labels in a list were kept as strings; both failed only later, far away (``repr``,
    ``n_params``, ``edit``: "'str' object has no attribute 'layer'"). Scores
    (:class:`~factlens.scores.ComponentScores`) would have given a mask of every scored component.
    """
    if isinstance(items, frozenset) and all(type(c) is Component for c in items):
        return items  # the usual case (masks built by factlens itself): nothing to convert
    if isinstance(items, (str, Component)):
        raise TypeError(f"Mask takes a list of Components or labels, got the single {type(items).__name__} "
                        f"{str(items)!r}; write Mask([{items!r}]) (a list even for one component)")
    if hasattr(items, "to_mask"):
        raise TypeError("Mask(scores) would select every scored component; choose them with "
                        "scores.to_mask(top_k=...), threshold=... or param_budget=...")
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"Mask takes a list of Components or labels such as 'L3H2' / 'L5.mlp', got "
                        f"{type(items).__name__} {str(items)[:60]!r}") from None
    bad = next((c for c in items if not isinstance(c, (Component, str))), None)
    if bad is not None:
        raise TypeError(f"a Mask holds Components or labels such as 'L3H2' / 'L5.mlp', got the item "
                        f"{type(bad).__name__} {str(bad)[:60]!r}")
    return frozenset(c if isinstance(c, Component) else Component.parse(c) for c in items)


@dataclass(frozen=True)
class Mask:
    """A set of components, the unit that localizations produce and editors consume.

    Built from a list of Components or labels (``Mask(["L1.mlp", "L2H1"])``; one bare label
    string is refused). Supports ``|`` (union), ``&`` (intersection), ``-`` (difference), ``in``,
    ``len`` and iteration in sorted order.

    Example:
        >>> m = Mask.from_labels(["L1.mlp", "L0H1"]) | Mask.from_labels(["L1.mlp"])
        >>> [c.label for c in m]
        ['L0H1', 'L1.mlp']
    """

    components: frozenset[Component]
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", _mask_components(self.components))

    @classmethod
    def from_labels(cls, labels: Iterable[str], name: str = "") -> "Mask":
        """The mask of a list of labels (``["L3H2", "L5.mlp"]``); one bare label string is refused
        (iterated, it was parsed letter by letter: "cannot parse component label 'L'")."""
        if isinstance(labels, str):
            raise TypeError(f"Mask.from_labels takes a list of labels, got the string {labels!r}; write "
                            f"Mask.from_labels([{labels!r}])")
        labels = list(labels)
        bad = [l for l in labels if not isinstance(l, str)]
        if bad:  # Component.parse(3) failed with "'int' object has no attribute 'strip'"
            raise TypeError(f"Mask.from_labels takes component labels (strings such as 'L3H2' or 'L5.mlp'), got "
                            f"{bad[0]!r} of type {type(bad[0]).__name__}; for Component objects use "
                            "Mask(frozenset(components))")
        return cls(frozenset(Component.parse(l) for l in labels), name=name)

    @classmethod
    def empty(cls) -> "Mask":
        return cls(frozenset(), name="empty")

    @classmethod
    def all_mlps(cls, model) -> "Mask":
        return cls(frozenset(ModelShape.of(model).all_mlps()), name="all_mlps")

    @classmethod
    def all_heads(cls, model) -> "Mask":
        return cls(frozenset(ModelShape.of(model).all_heads()), name="all_heads")

    @classmethod
    def everything(cls, model) -> "Mask":
        s = ModelShape.of(model)
        return cls(frozenset(s.all_heads() + s.all_mlps()), name="nonlocalized")

    def __iter__(self) -> Iterator[Component]:
        return iter(sorted(self.components, key=lambda c: (c.layer, c.kind != "head", c.kind, c.index or 0)))

    def __len__(self) -> int:
        return len(self.components)

    def __contains__(self, c: object) -> bool:
        if isinstance(c, str):
            c = Component.parse(c)
        return c in self.components

    def __or__(self, other: "Mask") -> "Mask":
        _check_operand(other, "|")
        return Mask(self.components | other.components, name=self.name or other.name)

    def __and__(self, other: "Mask") -> "Mask":
        _check_operand(other, "&")
        return Mask(self.components & other.components, name=self.name)

    def __sub__(self, other: "Mask") -> "Mask":
        _check_operand(other, "-")
        return Mask(self.components - other.components, name=self.name)

    def __repr__(self) -> str:
        labels = ", ".join(c.label for c in self)
        return f"Mask({self.name!r}: {labels})" if self.name else f"Mask({labels})"

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self]

    def heads(self) -> list[Component]:
        return [c for c in self if c.kind == "head"]

    def mlps(self) -> list[Component]:
        return [c for c in self if c.kind == "mlp"]

    def to_param_masks(self, model) -> dict[str, torch.Tensor]:
        """Boolean tensor per parameter name (only parameters the mask touches).

        The tensors have the parameter's shape and live on the parameter's device. Entries
        that are ``True`` may be changed by an editor; everything else must stay bitwise equal.
        """
        shape = ModelShape.of(model)
        self._check_fits(shape)
        params = dict(model.named_parameters())
        out: dict[str, torch.Tensor] = {}
        for comp in self.components:
            for name, idx in comp.param_slices(shape).items():
                if name not in params:
                    if "b_" in name.split(".")[-1]:
                        continue  # models without that bias
                    raise KeyError(f"{comp.label}: parameter {name!r} not found in the model")
                if name not in out:
                    p = params[name]
                    out[name] = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
                out[name][idx] = True
        return out

    def _check_fits(self, shape: ModelShape) -> None:
        """Raise ``ValueError`` for a component the model does not have (a mask loaded from a file
        or built from labels for another model)."""
        for c in self.components:
            _checked(c, shape, True, f"mask {self.name!r}" if self.name else "mask")

    def n_params(self, model_or_shape) -> int:
        """Number of parameter entries the mask selects (shared GQA K/V counted once).

        Accepts a ``HookedTransformer``, its config or a :class:`ModelShape`; the count is
        computed from the architecture and equals the number of ``True`` entries of
        :meth:`to_param_masks`.
        """
        s = model_or_shape if isinstance(model_or_shape, ModelShape) else ModelShape.of(model_or_shape)
        self._check_fits(s)  # counted from the shape alone, L7H9 of a 2-layer model had 1,048 parameters
        return self._count(s)

    def _count(self, s: ModelShape) -> int:
        """:meth:`n_params` of components known to exist in ``s`` (no check)."""
        dm, dh, dmlp = s.d_model, s.d_head, s.d_mlp
        gate = 2 if s.gated_mlp else 1
        total = 0
        kv_groups: set[tuple[int, int]] = set()
        mlp_layers = {c.layer for c in self.components if c.kind == "mlp"}
        for c in self.components:
            if c.kind == "head":
                total += dm * dh + dh + dh * dm
                kv_groups.add((c.layer, c.index // s.group_size))
            elif c.kind == "mlp":
                total += gate * dm * dmlp + dmlp * dm + dmlp + dm
            elif c.layer not in mlp_layers:
                total += gate * dm + 1 + dm
        total += len(kv_groups) * 2 * (dm * dh + dh)
        return int(total)

    # persistence
    def to_dict(self) -> dict:
        return {"name": self.name, "components": self.labels}

    @classmethod
    def from_dict(cls, d: dict) -> "Mask":
        """Inverse of :meth:`to_dict` (``{"name": ..., "components": [labels]}``).

        Raises:
            ValueError: ``d`` is not that layout (saved scores loaded as a mask were a bare
                ``KeyError: 'components'``, a plain list of labels a ``TypeError``); the message says
                what to load it with.
        """
        _check_mask_dict(d)
        return cls.from_labels(d["components"], name=d.get("name", ""))

    def save(self, path: str | Path) -> None:
        """Save as JSON (written to a temporary file first: an interrupted save leaves the old file).

        A mask saved there before is replaced (a re-run notebook cell); any other file is left
        alone and refused with a ``ValueError`` (it was overwritten without a word).
        """
        from factlens.files import check_output, write_atomic

        check_output(path, what="saved mask", ours=is_saved_mask)
        text = json.dumps(self.to_dict(), indent=1)
        write_atomic(path, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, path: str | Path) -> "Mask":
        """Read a file :meth:`save` wrote.

        Raises:
            ValueError: The file is empty or not JSON (the message names it), or not a mask's layout.
        """
        from factlens.strict_json import read_json

        return cls.from_dict(read_json(path, what="a saved Mask (JSON written by Mask.save)"))


def _check_operand(other: object, op: str) -> None:
    """Refuse a set operation with something other than a :class:`Mask` (``mask | ["L0.mlp"]`` was an
    ``AttributeError`` about ``components``)."""
    if not isinstance(other, Mask):
        raise TypeError(f"Mask {op} takes another Mask, got {type(other).__name__} {str(other)[:60]!r}; "
                        f"wrap components or labels as Mask([...]) first, e.g. mask {op} Mask(['L0.mlp'])")


def _check_mask_dict(d: object) -> None:
    """Raise ``ValueError`` naming the layout when ``d`` is not what :meth:`Mask.to_dict` writes."""
    if isinstance(d, Mapping) and isinstance(d.get("components"), (list, tuple)):
        return
    from factlens.files import not_saved_as

    raise not_saved_as("Mask", d, needs="a 'components' list of labels (what Mask.to_dict() writes, with 'name')",
                       own_loader="Mask.save / to_dict", list_hint="for a plain list of labels use Mask.from_labels(labels)")


def is_saved_mask(head: str) -> bool:
    """Whether a file's first characters are those of :meth:`Mask.save` (``{"name": ..., "components": [...``)."""
    return re.match(r'\{\s*"name": "(?:[^"\\]|\\.)*",\s*"components": \[', head) is not None
