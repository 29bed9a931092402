"""Shared plumbing of the closed-form memory editors (:mod:`factlens.editing.rome`, :mod:`factlens.editing.memit`).

Config validation and (de)serialization, mask and task checks, the key statistics of a
layer with a method config's settings, and the :class:`~factlens.editing.result.EditResult`
whose deltas are whole ``W_out`` tensors.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor

from factlens.config import check_numbers
from factlens.components import Component, Mask, ModelShape
from factlens.editing.config import EditConfig
from factlens.editing.covariance import KeyStatistics, key_statistics
from factlens.editing.result import EditResult
from factlens.editing.training import with_gradients  # noqa: F401  (ROME and MEMIT import it from here)

__all__ = ["check_value_fields", "EditorConfigMixin", "ValueEditConfig", "mask_mlp_layers", "forget_records", "split_config",
           "build_result", "layer_key_statistics", "covariance_meta", "MaskNotSupported", "add_update", "warn_rounding",
           "ROUNDING_WARN"]

#: Share of a closed-form update's norm lost to the weight's own precision above which the
#: editors warn (:func:`warn_rounding`).
ROUNDING_WARN = 0.1


class MaskNotSupported(ValueError):
    """An edit method cannot edit this mask (ROME: exactly one MLP; ROME and MEMIT: no heads or
    neurons). The runner reports it with the unit's name instead of a traceback."""


def check_value_fields(cfg: Any) -> None:
    """Validation shared by :class:`~factlens.editing.rome.RomeConfig` and :class:`~factlens.editing.memit.MemitConfig`."""
    check_numbers(cfg)  # types and finiteness first: NaN passed the range checks below
    name = type(cfg).__name__
    if cfg.v_num_grad_steps < 1:
        raise ValueError(f"{name}.v_num_grad_steps must be >= 1, got {cfg.v_num_grad_steps}")
    if not cfg.v_lr > 0:
        raise ValueError(f"{name}.v_lr must be > 0, got {cfg.v_lr}")
    for f in ("v_weight_decay", "kl_factor", "stop_loss", "cov_ridge"):
        if getattr(cfg, f) < 0:
            raise ValueError(f"{name}.{f} must be >= 0, got {getattr(cfg, f)}")
    if cfg.clamp_norm_factor is not None and not cfg.clamp_norm_factor > 0:
        raise ValueError(f"{name}.clamp_norm_factor must be > 0 (or None: no clamp), got {cfg.clamp_norm_factor}")
    kl = tuple(cfg.kl_prompts) if not isinstance(cfg.kl_prompts, str) else (cfg.kl_prompts,)
    if not kl:  # the KL term would be 0/0: NaN losses that never reach stop_loss
        raise ValueError(f"{name}.kl_prompts is empty; keep at least one essence prompt and set kl_factor=0 to "
                         "switch the KL term off")
    bad = [p for p in kl if p.count("{}") != 1]
    if bad:
        raise ValueError(f"{name}.kl_prompts need exactly one '{{}}' slot for the subject, got {bad}")
    object.__setattr__(cfg, "kl_prompts", kl)
    object.__setattr__(cfg, "prefix_lengths", _prefix_lengths(cfg.prefix_lengths, where=f"{name}.prefix_lengths"))
    if cfg.n_cov_tokens < 1 or cfg.cov_seq_len < 2:
        raise ValueError(f"{name}: n_cov_tokens must be >= 1 and cov_seq_len >= 2")
    if cfg.text_source is not None and not isinstance(cfg.text_source, str):
        object.__setattr__(cfg, "text_source", str(cfg.text_source))


def _prefix_lengths(value: Any, *, where: str) -> tuple[tuple[int, int], ...]:
    """``(words, count)`` pairs of integers (numpy's too), as a tuple of pairs of Python ints.

    ``int()`` read ``(5.7, 2.9)`` as two 5-word prefixes and ``("10", "5")`` as five 10-word ones
    (before 2026-12-06): a float or a string here is a mistake to report, not a number to round.
    """
    import numbers

    def integer(x: Any) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    try:
        pairs = [tuple(p) for p in value]
    except TypeError:
        pairs = None
    if pairs is None or isinstance(value, (str, bytes)) or any(len(p) != 2 for p in pairs):
        raise ValueError(f"{where} must be (words, count) pairs, e.g. [[5, 10], [10, 10]], got {value!r}")
    bad = [p for p in pairs if not (integer(p[0]) and integer(p[1]))]
    if bad:
        raise ValueError(f"{where} must be pairs of integers (words, count), got {bad} in {value!r}; write whole "
                         "numbers, e.g. [[5, 10]] (no decimals or quotes)")
    pl = tuple((int(w), int(n)) for w, n in pairs)
    if any(w < 1 or n < 0 for w, n in pl):
        raise ValueError(f"{where} need words >= 1 and count >= 0, got {pl}")
    return pl


class EditorConfigMixin:
    #: The edit method's name in ``EDIT_METHODS`` (its table in ``EditConfig.methods``).
    method: ClassVar[str] = ""

    def replace(self, **changes: Any):
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict` (unknown keys raise a clear error)."""
        return cls._from_table(d)

    @classmethod
    def _from_table(cls, d: Mapping[str, Any], *, where: str = ""):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}{f' (in {where})' if where else ''}; "
                             f"known: {sorted(names)}")
        return cls(**d)

    @classmethod
    def from_edit_config(cls, config: EditConfig):
        """The settings ``factlens.edit(..., method=...)`` uses for an :class:`EditConfig`.

        The defaults; then ``EditConfig.sft_source`` (the general text of the edit) as the
        covariance text and ``seed`` as the prefix seed; then the method's table in
        ``EditConfig.methods`` (under ``cls.method``), whose fields win.
        """
        table = dict(config.methods.get(cls.method, {}))
        return cls._from_table({"text_source": config.sft_source, "seed": config.seed, **table},
                               where=f"EditConfig.methods[{cls.method!r}]")


@dataclass(frozen=True)
class ValueEditConfig(EditorConfigMixin):
    """The fields ROME and MEMIT share: the value optimization and the key covariance.

    The defaults are ROME's (GPT-2 XL); :class:`~factlens.editing.memit.MemitConfig` overrides
    the ones MEMIT's GPT-J settings change. The fields are documented on
    :class:`~factlens.editing.rome.RomeConfig` and :class:`~factlens.editing.memit.MemitConfig`.
    """

    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float | None = 4.0
    kl_factor: float = 0.0625
    stop_loss: float = 0.05
    kl_prompts: tuple[str, ...] = ("{} is a",)
    prefix_lengths: tuple[tuple[int, int], ...] = ((5, 10), (10, 10))
    text_source: str | None = None
    n_cov_tokens: int = 10_000
    cov_seq_len: int = 128
    cov_ridge: float = 1e-3
    cache_covariance: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_value_fields(self)


def mask_mlp_layers(mask, model, *, method: str) -> list[int]:
    """The MLP layers of a mask of whole MLPs; heads or neurons raise a clear ``ValueError``.

    ``mask`` is read as :func:`factlens.editing.edit` reads it (a Mask, components or labels);
    scores are refused (iterated, scores of MLPs would have edited every scored layer)."""
    from factlens.editing.editor import _as_mask  # editor imports the methods' registry, not this module

    comps = list(_as_mask(mask))
    shape = ModelShape.of(model)
    if shape.attn_only:  # "use a mask of MLP layers only" cannot be followed on this model
        raise MaskNotSupported(f"{method} edits MLP layers (their W_out), and the model is attention-only: it has no "
                               "MLPs. Use method='finetune' (any mask of heads)")
    other = [c.label for c in comps if not isinstance(c, Component) or c.kind != "mlp"]
    if other:
        raise MaskNotSupported(f"{method} edits whole MLP layers (their W_out); the mask also has {other[:6]} "
                         "(heads/neurons). Use a mask of MLP layers only, e.g. "
                         "Mask([c for c in mask if c.kind == 'mlp']), or method='finetune'")
    if not comps:
        raise MaskNotSupported(f"{method} needs a mask with at least one MLP layer; the mask is empty")
    for c in comps:
        c.param_slices(shape)  # raises for layers that do not exist / attention-only models
    return sorted({c.layer for c in comps})


def forget_records(task, objective: str | None, *, method: str) -> list:
    """The task's forget facts, checked for what ROME/MEMIT need (objective ``"inject"``, targets)."""
    if not all(hasattr(task, a) for a in ("forget", "objective")):
        raise TypeError(f"{method} needs a factlens Task, got {type(task).__name__}")
    objective = objective or task.objective
    if objective != "inject":
        raise ValueError(f"{method} writes new facts (objective 'inject'); got objective {objective!r}. "
                         "For unlearning use method='finetune'")
    records = list(task.forget)
    if not records:
        raise ValueError("the task has no forget facts to edit")
    missing = [r.id or r.subject for r in records if r.target_new is None]
    if missing:
        raise ValueError(f"{method} needs target_new on every forget fact; missing for {missing[:5]}")
    return records


def split_config(config, cls) -> tuple[Any, EditConfig]:
    """``(method config, EditConfig for the result)`` from ``None``, an :class:`EditConfig` or a ``cls``."""
    if config is None:
        return cls(), EditConfig()
    if isinstance(config, cls):
        return config, EditConfig()
    if isinstance(config, EditConfig):
        return cls.from_edit_config(config), config
    raise TypeError(f"config must be a {cls.__name__} or an EditConfig, got {type(config).__name__}")


def build_result(work, mask, edit_config: EditConfig, originals: dict[str, Tensor], *, task, t0: float,
                 history: list[dict[str, Any]], meta: dict[str, Any]) -> EditResult:
    """An :class:`EditResult` whose deltas are the whole ``W_out`` tensors in ``originals``."""
    return EditResult.from_originals(work, mask, originals, config=edit_config, objective="inject", task=task,
                                     history=tuple(history), seconds=time.perf_counter() - t0, meta=meta)


def layer_key_statistics(model, layer: int, cfg: Any) -> KeyStatistics:
    return key_statistics(model, layer, text_source=cfg.text_source, n_tokens=cfg.n_cov_tokens, seq_len=cfg.cov_seq_len,
                          cache=cfg.cache_covariance)


def covariance_meta(stats: KeyStatistics) -> dict[str, Any]:
    return {"layer": stats.layer, "n_tokens": stats.n_tokens, "text_source": stats.text_source,
            "path": str(stats.path) if stats.path else None}


def add_update(W: Tensor, update: Tensor, *, what: str = "the closed-form update") -> float:
    """Add a closed-form update to the weight ``W`` in place and return the share of the
    update's norm that the weight's precision lost.

    Half-precision weights get ``W + update`` computed in float32 and rounded once (before
    2026-12-06 the update was first rounded to ``W``'s dtype and then added, two roundings);
    float32 and float64 weights get ``W += update`` in their own dtype.

    In bfloat16 a weight entry of size 1e-2 has a rounding step of about 4e-5, and an update
    entry under half of it is rounded away. AlphaEdit's null-space update is spread thinly over
    many entries: on a Gemma-3-shaped tiny model in bfloat16 (2 facts, 4 layers) it changed 9 and
    23 of 2,048 entries of its two layers, losing 0.996 and 0.965 of the update's norm; MEMIT
    lost 0.07 and 0.18, ROME 0.002 (measured 2026-12-06, one rounding). The edit then
    silently does less than the method computed; the editors record this share
    (``"update_lost"`` in their meta) and warn above :data:`ROUNDING_WARN`. float32 and float64
    weights return 0.0 (their rounding is at float precision and is not measured).

    Raises:
        FloatingPointError: ``update`` has a NaN or an infinite entry; ``W`` is left as it was
            (such an update was added before, and the edited layer gave NaN on every input).
            ``what`` names the update in the message.
    """
    bad = int((~torch.isfinite(update)).sum())
    if bad:
        raise FloatingPointError(
            f"{what} has {bad} non-finite (NaN or infinite) entries of {update.numel()}; it was not written into the "
            f"weight ({W.dtype}), which is unchanged. Its keys, the key statistics or the values it writes overflowed: "
            "edit a float32 copy of the model (model.float()) or lower v_lr")
    with torch.no_grad():
        if W.dtype not in (torch.float16, torch.bfloat16):
            W.add_(update.to(device=W.device, dtype=W.dtype))
            return 0.0
        before = W.detach().float()
        want = update.to(device=W.device, dtype=torch.float32)
        W.copy_(before + want)  # one rounding (the update rounded to W's dtype first, then the sum: two)
        return float((W.detach().float() - before - want).norm() / want.norm().clamp_min(1e-30))


def warn_rounding(lost: Mapping[Any, float], *, method: str, dtype: torch.dtype, where: str) -> None:
    """Warn when the largest share of an update lost to rounding (``lost``: per layer or fact,
    from :func:`add_update`) is above :data:`ROUNDING_WARN`; ``where`` names what the keys are."""
    if not lost:
        return
    key, worst = max(lost.items(), key=lambda kv: kv[1])
    if worst > ROUNDING_WARN:
        share = f"{worst:.0%}" if worst <= 1 else "all (the rounding error is larger than the update)"
        warnings.warn(f"{method}: {share} of the update's norm was lost to rounding in the model's {dtype} weights "
                      f"({where} {key}; meta records each share as 'update_lost'): the edit is weaker than computed. "
                      "Edit a float32 copy of the model (model.float()) or load it in float32", RuntimeWarning,
                      stacklevel=3)
