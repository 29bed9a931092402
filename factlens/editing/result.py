"""The result of an edit: the weight delta (revertible, saveable, re-appliable) and its history."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from factlens.components import Mask, ModelShape
from factlens.digests import update_with_tensor
from factlens.editing.applications import _Applications, _holds_new
from factlens.editing.config import EditConfig
from factlens.editing.delta_checks import _check_deltas, _original_regions
from factlens.strict_json import strict_dumps

__all__ = ["ParamDelta", "EditResult", "FORMAT_VERSION", "HISTORY_COLUMNS", "full_mask", "flat_copy",
           "EditChangedError"]


class EditChangedError(RuntimeError):
    """:meth:`EditResult.revert` found the edited entries changed since the edit was applied."""

#: Saved-file format: 2 adds ``original_fingerprint`` (files of format 1 still load).
FORMAT_VERSION = 2
_META_KEY = "factlens_edit"
#: The entries of one fine-tuning history step (:meth:`EditResult.to_frame`). A weight mask's history
#: has other keys (:attr:`factlens.editing.weight_mask.WeightMaskResult.history`).
HISTORY_COLUMNS = ("step", "loss", "loss_forget", "loss_retain", "loss_sft", "lr")


def full_mask(shape, device=None) -> Bool[Tensor, "..."]:
    """An all-``True`` boolean mask of ``shape`` that holds one byte (a stride-0 view of one element).

    A fully trained tensor's mask carries no information beyond its shape, yet a materialized
    one costs a byte per entry: 0.1 GB for the non-localized edit of Gemma 3 270M, 9 GB for
    Gemma-2-9B. The view reads like the full tensor (indexing, ``sum``, ``all``, ``~``) and
    ``.contiguous()`` (as :meth:`EditResult.save` does) materializes it. Never write into it:
    its one element is every entry (masks of a :class:`ParamDelta` are read, never written).

    Example:
        >>> m = full_mask((1000, 1000))
        >>> m.shape, int(m.sum()), m.untyped_storage().nbytes()
        (torch.Size([1000, 1000]), 1000000, 1)
    """
    return torch.ones((), dtype=torch.bool, device=device).expand(tuple(shape))


def flat_copy(t: Tensor) -> Float[Tensor, "n"]:
    """``t``'s values in row-major order as one new 1-D tensor, with a single allocation.

    ``t.reshape(-1).clone()`` allocates twice for a tensor stored in another layout (the
    runner keeps MLP weights and ``W_O`` transposed, :mod:`factlens.layout`): once for the
    reshape, once for the clone.
    """
    return t.detach().clone(memory_format=torch.contiguous_format).reshape(-1)


@dataclass(frozen=True)
class ParamDelta:
    """The change of one parameter tensor.

    An all-``True`` mask is kept as :func:`full_mask` (one byte instead of one per entry),
    whatever tensor was passed: equal values, so every reader sees the same mask.

    Attributes:
        mask: Boolean tensor of the parameter's shape; ``True`` where the editor may change it.
        old: Values of the masked entries before the edit (``param[mask]``).
        new: Values of the masked entries after the edit.
    """

    mask: Bool[Tensor, "..."]
    old: Float[Tensor, "n"]
    new: Float[Tensor, "n"]

    def __post_init__(self) -> None:
        m = self.mask
        if m.dtype == torch.bool and m.numel() > 1 and m.untyped_storage().nbytes() > 1 and bool(m.all()):
            object.__setattr__(self, "mask", full_mask(m.shape, m.device))

    @property
    def trains_all(self) -> bool:
        """Every entry of the parameter may change (the mask is a :func:`full_mask`), read
        without building the mask."""
        m = self.mask
        return m.untyped_storage().nbytes() <= 1 and bool(m[(0,) * m.dim()]) if m.numel() else False

    @property
    def n_changed(self) -> int:
        return int((self.old != self.new).sum())

    def norm(self) -> float:
        return float(torch.linalg.vector_norm((self.new.double() - self.old.double())))


def _params(model) -> dict[str, torch.nn.Parameter]:
    return dict(model.named_parameters())


def _fingerprint(tensors: Mapping[str, Tensor]) -> str:
    """sha256 of named tensors (name, dtype, shape and bytes of each, in sorted name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        update_with_tensor(h, t)  # the same bytes, a piece at a time
    return h.hexdigest()


def _original_tensors(model, deltas: Mapping[str, "ParamDelta"]) -> dict[str, Tensor]:
    """The touched parameter tensors of ``model`` as they were before the edit (masked entries <- ``old``)."""
    params = _params(model)
    out = {}
    with torch.no_grad():
        for name, d in deltas.items():
            p = params[name]
            if bool(d.mask.all()):
                out[name] = d.old.to(device=p.device, dtype=p.dtype).reshape(p.shape)  # a loaded result's are on the CPU
            else:
                t = p.detach().clone()
                t[d.mask.to(p.device)] = d.old.to(device=p.device, dtype=p.dtype)
                out[name] = t
    return out


@dataclass(frozen=True)
class EditResult:
    """An edit: which entries changed from what to what, with the training history.

    ``revert()`` undoes the edit on the model it was made on (or last applied to), bitwise;
    ``apply(model)`` writes the edited values into another model of the same architecture;
    ``save(path)`` / ``EditResult.load(path)`` store the delta as safetensors.

    Attributes:
        model: The edited model (``None`` for a loaded result). With ``inplace=False`` this
            is the edited copy.
        mask: The components that were trained.
        config: The hyper-parameters.
        objective: The objective's name (``"inject"``, ``"unlearn"``, ``"npo"``, ``"rmu"``...).
        history: One dict per optimizer step: ``step, loss, loss_forget, loss_retain, loss_sft, lr``.
        seconds: Wall-clock time of the training loop (setup included).
        sft_kind: ``"text:<source>"``, ``"kl:builtin"`` or ``"none"`` (``l_sft=0``).
        n_params_trained: Number of parameter entries the mask lets change.
        deltas: Parameter name -> :class:`ParamDelta`.
        shape: The architecture the delta belongs to.
        model_name: ``model.cfg.model_name``.
        task_name: Name of the task.
        meta: Extra information (counts, warnings, timing per step).
        original_fingerprint: sha256 of the touched parameter tensors of the model before the
            edit (computed when the result is made, saved with it); ``apply`` warns when the
            target model's tensors differ (same shapes, other weights). ``None`` for files
            saved before fingerprints were kept.
    """

    model: Any = field(repr=False, compare=False)
    mask: Mask
    config: EditConfig
    objective: str
    history: tuple[dict, ...]
    seconds: float
    sft_kind: str
    n_params_trained: int
    deltas: Mapping[str, ParamDelta] = field(repr=False, compare=False)
    shape: ModelShape
    model_name: str = ""
    task_name: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    original_fingerprint: str | None = field(default=None, compare=False)
    # where the edit is applied now (runtime state of the models, not data of the result)
    _applied: _Applications = field(default_factory=_Applications, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.model is not None:
            if self.original_fingerprint is None:
                fp = _fingerprint(_original_tensors(self.model, self.deltas))
                object.__setattr__(self, "original_fingerprint", fp)
            self._applied.push(self.model, {n: d.old for n, d in self.deltas.items()})

    @classmethod
    def from_originals(cls, model, mask, originals: Mapping[str, Tensor], *, config: EditConfig, objective: str,
                       task=None, history: tuple[dict, ...] = (), seconds: float = 0.0,
                       meta: dict[str, Any] | None = None) -> "EditResult":
        """The result of an edit that changed whole parameter tensors of ``model`` in place:
        ``originals`` maps each changed parameter's name to a copy of its values before.

        For an edit method of your own (docs/extending.md): every entry the method changed must
        be in ``originals`` (the runner checks, after each unit, that reverting brought every
        parameter back bit for bit). Of a parameter that ``mask`` selects in part (a neuron's
        row), the result records the mask's entries.

        Raises:
            ValueError: An original names no parameter of ``model``, has another shape than its
                parameter, or belongs to a parameter (or has changed entries) outside ``mask``:
                an edit changes only its mask's entries, which ``apply`` checks.

        Example:
            >>> import torch
            >>> from factlens.components import Mask
            >>> from factlens.testing import planted_fact_model
            >>> p = planted_fact_model()
            >>> W = p.model.blocks[p.lookup_layer].mlp.W_out
            >>> old = {f"blocks.{p.lookup_layer}.mlp.W_out": W.detach().clone()}
            >>> with torch.no_grad():
            ...     _ = W.mul_(0.5)
            >>> r = EditResult.from_originals(p.model, Mask([p.lookup_mlp]), old, config=EditConfig(), objective="unlearn")
            >>> r.n_changed > 0, r.revert() is p.model, torch.equal(W, old[f"blocks.{p.lookup_layer}.mlp.W_out"])
            (True, True, True)
        """
        from factlens.editing.editor import _as_mask  # edit()'s reading of a mask (editor imports this module)

        mask = _as_mask(mask)
        params = dict(model.named_parameters())
        unknown = sorted(set(originals) - set(params))
        if unknown:
            raise ValueError(f"originals names parameters the model does not have: {unknown[:5]}")
        regions = _original_regions(model, mask, originals, params)
        deltas = {}
        for n, o in originals.items():
            r = regions.get(n)  # a parameter the mask selects in part: the delta of its mask's entries (apply() checks)
            deltas[n] = (ParamDelta(full_mask(o.shape, o.device), o.reshape(-1), flat_copy(params[n])) if r is None
                         else ParamDelta(r, o[r], params[n].detach()[r.to(params[n].device)]))  # indexing copies
        return cls(model=model, mask=mask, config=config, objective=objective, history=tuple(history),
                   seconds=seconds, sft_kind="none", n_params_trained=sum(d.old.numel() for d in deltas.values()),
                   deltas=deltas, shape=ModelShape.of(model), model_name=str(getattr(model.cfg, "model_name", "")),
                   task_name=getattr(task, "name", ""), meta=dict(meta or {}))

    # -- summaries ----------------------------------------------------------------------
    @property
    def n_changed(self) -> int:
        """Number of entries whose value actually changed."""
        return sum(d.n_changed for d in self.deltas.values())

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(len(self.history), 1)

    def delta_norm(self) -> float:
        """L2 norm of the weight change over all parameters.

        Summed in the order of the parameter names: the order of ``deltas`` follows the
        mask's set iteration, which depends on ``PYTHONHASHSEED``, and a float sum in another
        order can differ in the last bit (two worker processes wrote different norms).
        """
        return math.sqrt(sum(self.deltas[n].norm() ** 2 for n in sorted(self.deltas)))

    def delta_norms(self) -> dict[str, float]:
        """L2 norm of the weight change per parameter, by parameter name."""
        return {n: self.deltas[n].norm() for n in sorted(self.deltas)}

    def final_losses(self) -> dict[str, float]:
        """The last history entry (empty dict if nothing was trained)."""
        return dict(self.history[-1]) if self.history else {}

    def to_frame(self):
        """The training history as a pandas DataFrame, one row per recorded step.

        Columns are the keys of the history entries: ``step, loss, loss_forget, loss_retain,
        loss_sft, lr`` for fine-tuning, plus what a method records (``fact``, ``layer``,
        ``p_target``... for ROME/MEMIT's value optimization); a key an entry lacks is NaN
        there (a learned weight mask's history has other keys: its own
        :meth:`~factlens.editing.weight_mask.WeightMaskResult.to_frame`). A result without
        training steps gives an empty frame with the fine-tuning columns.
        ``plotly.express.line(res.to_frame(), x="step", y=["loss_forget", "loss_retain"])``
        draws two of the curves (:meth:`plot_history` draws all of them); pandas' own
        ``DataFrame.plot`` would need matplotlib, which factlens does not install.
        """
        import pandas as pd

        if not self.history:
            return pd.DataFrame(columns=list(HISTORY_COLUMNS))
        return pd.DataFrame.from_records([dict(h) for h in self.history])

    # -- apply / revert -----------------------------------------------------------------
    def check_compatible(self, model) -> None:
        """Raise ``ValueError`` unless ``model`` has this result's architecture and parameter shapes."""
        shape = ModelShape.of(model)
        if shape != self.shape:
            diff = {k: (v, shape.to_dict()[k]) for k, v in self.shape.to_dict().items() if shape.to_dict()[k] != v}
            raise ValueError(f"this edit was made on {self.model_name or 'a model'} with shape {self.shape}; the given "
                             f"model ({getattr(model.cfg, 'model_name', '?')}) differs in {diff} (edit vs model). "
                             "Apply an edit only to a model of the same architecture")
        params = _params(model)
        for name, d in self.deltas.items():
            if name not in params:
                raise ValueError(f"the model has no parameter {name!r} that this edit changes; it is a different architecture")
            if tuple(params[name].shape) != tuple(d.mask.shape):
                raise ValueError(f"parameter {name!r} has shape {tuple(params[name].shape)} in the model but "
                                 f"{tuple(d.mask.shape)} in the edit; it is a different architecture")

    def check_deltas(self, model) -> None:
        """Raise ``ValueError`` unless every saved tensor fits its mask and ``model``.

        Checks the architecture and parameter shapes (:meth:`check_compatible`), that each
        delta has one old and one new value per masked entry, finite new values, and that
        no delta changes an entry outside the parameters of :attr:`mask`'s components.
        """
        self.check_compatible(model)
        _check_deltas(self.deltas, "this edit")
        allowed = self.mask.to_param_masks(model)
        for name, d in self.deltas.items():
            a = allowed.get(name)
            if a is None or bool((d.mask.to(a.device) & ~a).any()):
                raise ValueError(f"the delta of {name!r} changes entries outside the edit's mask "
                                 f"({self.mask.name or len(self.mask)} components); the saved edit is damaged")

    def apply(self, model, *, check_weights: bool = True):
        """Write the edited values into ``model`` (same architecture); returns ``model``.

        All or nothing: every delta is checked first (:meth:`check_deltas`), then written; if
        a write fails, the entries already written are restored before the error propagates.
        The model's previous values of the masked entries are remembered, so ``revert()``
        restores it exactly.

        Args:
            model: The model to edit in place.
            check_weights: Warn (``UserWarning``) when the touched tensors of ``model`` are not
                the ones the edit was made on (:attr:`original_fingerprint`): same shapes,
                other weights, so the edit will not do what it did there.

        Raises:
            ValueError: ``model`` has another architecture or other parameter shapes, or a
                delta does not fit its mask.
        """
        self.check_deltas(model)
        params = _params(model)
        if check_weights and self.original_fingerprint is not None:
            now = _fingerprint({n: params[n] for n in self.deltas})
            if now != self.original_fingerprint:
                warnings.warn(
                    f"applying an edit of {self.model_name or 'a model'} to a model whose touched weights differ from "
                    f"the ones it was made on (fingerprint {now[:12]} vs {self.original_fingerprint[:12]}): same "
                    "shapes, other weights (another checkpoint or dtype, or an edit already applied); the edited "
                    "values replace them anyway, and the result is not the evaluated edit", UserWarning, stacklevel=2)
        with torch.no_grad():
            todo = {}
            for name, d in self.deltas.items():  # everything converted before anything is written
                p = params[name]
                m = d.mask.to(p.device)
                todo[name] = (p, m, d.new.to(device=p.device, dtype=p.dtype), p.detach()[m])  # indexing copies
            done: list[str] = []
            try:
                for name, (p, m, new, _) in todo.items():
                    p[m] = new
                    done.append(name)
            except BaseException:
                for name in done:
                    p, m, _, old = todo[name]
                    p[m] = old
                raise
        self._applied.push(model, {n: t[3] for n, t in todo.items()})
        return model

    def revert(self, model=None):
        """Undo the edit (bitwise) on ``model`` (default: the model last edited or applied to).

        Returns the reverted model. Edits stacked on top of each other must be reverted in
        reverse order (:class:`~factlens.editing.sequential.SequentialEditResult` does that).

        Raises:
            RuntimeError: Nothing to revert (e.g. a loaded result that was never applied).
            EditChangedError: The edited entries no longer hold the edit's values (a later edit
                not reverted first); the model is left as it is.
        """
        entry = self._applied.pop(model, remove=False)
        if entry is None:
            raise RuntimeError("nothing to revert: this edit is not applied to " +
                               ("any model" if model is None else "that model") + " (apply(model) first)")
        target, prev = entry
        params = _params(target)
        changed = [n for n, d in self.deltas.items() if not _holds_new(params[n], d)]
        if changed:  # writing the old values would undo a later edit's entries too, and leave the rest of it
            raise EditChangedError(f"cannot revert: the entries this edit wrote in {changed[:4]} no longer hold its values; "
                               "another edit or change was made after this one: revert it first (edits stacked on "
                               "each other are reverted last one first); nothing was changed")
        self._applied.pop(model)
        with torch.no_grad():
            for name, d in self.deltas.items():
                p = params[name]
                p[d.mask.to(p.device)] = prev[name].to(device=p.device, dtype=p.dtype)
        return target

    def offload(self, folder: str | Path) -> int:
        """Keep the record's old and new values (and partial masks) in a file instead of memory.

        The tensors are replaced by bitwise-equal copies mapped from one temporary file in
        ``folder`` (:func:`factlens.memory.mapped_copies`; deleted at once, its space freed with
        the copies): a page is read back only when something reads it (``revert``, ``save``,
        ``apply``, the unedited view of :class:`~factlens.runner.pristine.OriginalView`). The
        runner does this between the edit and the evaluation, which never reads the record
        (except the ``update_size`` suite): for the non-localized edit of Gemma 3 270M it is
        0.8 GB (4 bytes old + 4 bytes new per parameter). Tensors not on the CPU stay.
        Revert and re-apply work as before.

        Returns:
            The number of bytes moved out of memory.
        """
        from factlens.memory import mapped_copies

        tensors = {}
        for n, d in self.deltas.items():
            tensors[f"{n}/old"], tensors[f"{n}/new"] = d.old, d.new
            if d.mask.untyped_storage().nbytes() > 1:  # a full_mask holds one byte already
                tensors[f"{n}/mask"] = d.mask
        moved = sum(t.numel() * t.element_size() for t in tensors.values() if t.device.type == "cpu")
        mapped = mapped_copies(tensors, folder)
        for n, d in self.deltas.items():  # revert's saved values are these old values when the edit was made here
            self._applied.replace(d.old, mapped[f"{n}/old"])
        new = {n: ParamDelta(mapped.get(f"{n}/mask", d.mask), mapped[f"{n}/old"], mapped[f"{n}/new"])
               for n, d in self.deltas.items()}
        if isinstance(self.deltas, dict):
            self.deltas.update(new)
        else:
            object.__setattr__(self, "deltas", new)
        return moved

    @property
    def applied(self) -> bool:
        """Whether the edit is currently applied to some model."""
        return bool(self._applied)

    def is_applied_to(self, model) -> bool:
        """Whether the edit is currently applied to ``model`` (that object)."""
        return self._applied.holds(model)

    # -- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable metadata (everything except the tensors and the model)."""
        return {
            "format_version": FORMAT_VERSION, "model_name": self.model_name, "task_name": self.task_name,
            "objective": self.objective, "config": self.config.to_dict(), "mask": self.mask.to_dict(),
            "shape": self.shape.to_dict(), "history": list(self.history), "seconds": self.seconds,
            "sft_kind": self.sft_kind, "n_params_trained": self.n_params_trained, "meta": self.meta,
            "params": sorted(self.deltas), "param_shapes": {n: list(d.mask.shape) for n, d in sorted(self.deltas.items())},
            "original_fingerprint": self.original_fingerprint,
        }

    def save(self, path: str | Path) -> None:
        """Save the delta (safetensors: ``<param>/mask``, ``/old``, ``/new``) and metadata JSON.

        The file is written to a temporary file first (an interrupted save leaves the old one). An
        edit saved there before is replaced (a re-run notebook cell); any other file is left alone
        and refused with a ``ValueError`` (it was overwritten without a word).
        """
        from safetensors.torch import save_file

        from factlens.files import check_output, write_atomic

        check_output(path, what="saved edit", ours=_is_saved_edit)
        tensors = {}
        for name, d in self.deltas.items():
            tensors[f"{name}/mask"] = d.mask.detach().cpu().contiguous()
            tensors[f"{name}/old"] = d.old.detach().cpu().contiguous()
            tensors[f"{name}/new"] = d.new.detach().cpu().contiguous()
        meta = {_META_KEY: strict_dumps(self.to_dict(), indent=None)}
        write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> "EditResult":
        """Load a saved edit (not applied to any model; use ``apply(model)``).

        Every saved tensor is checked against its mask (one old and one new value per masked
        entry, the parameter shape recorded with it, finite values) before the result is
        returned; ``apply`` checks them against the model before writing anything.

        Raises:
            FileNotFoundError: No file at ``path``.
            ValueError: Not a factlens edit, a newer format, or damaged (the message names the
                file and the tensor).
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved edit at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = (f.metadata() or {}).get(_META_KEY)
                if meta is None:
                    raise ValueError(f"{path} is not a factlens edit (no {_META_KEY!r} metadata)")
                d = _load_meta(meta, path)
                keys = set(f.keys())
                missing = [f"{n}/{k}" for n in d["params"] for k in ("mask", "old", "new") if f"{n}/{k}" not in keys]
                if missing:
                    raise ValueError(f"{path}: the saved edit lacks the tensors {missing[:6]}; the file is damaged")
                deltas = {n: ParamDelta(f.get_tensor(f"{n}/mask"), f.get_tensor(f"{n}/old"), f.get_tensor(f"{n}/new"))
                          for n in d["params"]}
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - safetensors' own errors (bad header, truncated file)
            raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
        _check_deltas(deltas, str(path))
        for n, shp in (d.get("param_shapes") or {}).items():
            if n in deltas and list(deltas[n].mask.shape) != list(shp):
                raise ValueError(f"{path}: the mask of {n!r} has shape {tuple(deltas[n].mask.shape)} but the edit was "
                                 f"saved for shape {tuple(shp)}; the file is damaged")
        return cls(model=None, mask=Mask.from_dict(d["mask"]), config=EditConfig.from_dict(d["config"]),
                   objective=d["objective"], history=tuple(d["history"]), seconds=d["seconds"], sft_kind=d["sft_kind"],
                   n_params_trained=d["n_params_trained"], deltas=deltas, shape=ModelShape.from_dict(d["shape"]),
                   model_name=d["model_name"], task_name=d.get("task_name", ""), meta=d.get("meta", {}),
                   original_fingerprint=d.get("original_fingerprint"))

    # -- plotting -----------------------------------------------------------------------
    def plot_history(self, title: str | None = None):
        """Plotly figure of the losses per optimizer step (learning rate on a second axis)."""
        return plot_histories([self.history], title=title or f"edit {self.task_name} ({self.objective}, {self.mask.name or len(self.mask)})")


def _is_saved_edit(head: str) -> bool:
    """Whether a file's first characters are those of :meth:`EditResult.save` (a safetensors header,
    after its 8-byte length, that opens with the edit's metadata)."""
    return '{"__metadata__":{"' + _META_KEY + '":' in head[:64]


def _load_meta(text: str, path: Path) -> dict[str, Any]:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the edit's metadata is not valid JSON ({e}); the file is damaged") from e
    version = d.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} was saved in edit format {version!r}; this factlens reads formats up to "
                         f"{FORMAT_VERSION} (upgrade factlens)")
    missing = [k for k in ("params", "mask", "config", "objective", "history", "seconds", "sft_kind",
                           "n_params_trained", "shape", "model_name") if k not in d]
    if missing:
        raise ValueError(f"{path}: the edit's metadata lacks {missing}; the file is damaged")
    return d


def plot_histories(histories, *, title: str = "", labels=None):
    """Plot one or more loss histories (a helper shared with sequential editing)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    offset = 0
    for k, hist in enumerate(histories):
        hist = list(hist)
        steps = [offset + h["step"] for h in hist]
        tag = f"{labels[k]} " if labels else ""
        for key in ("loss", "loss_forget", "loss_retain", "loss_sft"):
            fig.add_trace(go.Scatter(x=steps, y=[h[key] for h in hist], mode="lines", name=f"{tag}{key}",
                                     legendgroup=key, showlegend=k == 0 or not labels), secondary_y=False)
        fig.add_trace(go.Scatter(x=steps, y=[h["lr"] for h in hist], mode="lines", name=f"{tag}lr",
                                 line=dict(dash="dot"), legendgroup="lr", showlegend=k == 0 or not labels),
                      secondary_y=True)
        offset = steps[-1] + 1 if steps else offset
    fig.update_layout(title=title, xaxis_title="optimizer step")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="learning rate", secondary_y=True)
    return fig
