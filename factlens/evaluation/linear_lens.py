"""Linear lens: the logit lens through a least-squares map from each layer to the last.

The logit lens (:mod:`~factlens.evaluation.logit_lens`) reads a layer's residual stream as if
the layers after it did nothing. Early and middle layers use the residual in a basis the
unembedding does not read, so the logit lens is blind there (on Gemma 3 270M it reads no sports
fact before layer 12 of 18), and those are the layers where a localized edit acts. Din et al.
2023 ("Jump to Conclusions: Short-Cutting Transformers With Linear Transformations") fit, per
layer, the affine map ``h -> h @ W + b`` that best predicts the last layer's residual from this
layer's by least squares on general text, and read its output through the final norm and
unembedding. Belrose et al. 2023's tuned lens trains the same kind of map by the KL divergence
to the model's output distribution; that needs the full-vocabulary unembedding at every
position and step (262k tokens on Gemma), while the least-squares map needs one forward pass
over the text and one ``d_model x d_model`` solve per layer, so this is the one factlens fits.

Each model is read through a lens fitted to itself, as an attacker with the weights would fit
one: the edited model through its own, the original (the baseline) through the original's. The
map is fitted on general text (``EvalConfig.text.source``, ``n_chunks`` chunks of ``seq_len``
tokens, BOS left out), never on the task's prompts, so it cannot learn the edited facts from
the evaluation itself; at the last layer it is the identity, so the last layer's reading is the
model's output as in the logit lens. Everything else (candidates by first token, the
cross-fitted layer, the eligibility rule, selectivity, top k) is the logit lens's, with metrics
named ``linear_lens_*``. ``extra["fit"]`` records each lens's fit: tokens used and, per layer,
the held-out share of the last layer's residual variance it explains (``r2``, two-fold over the first
and second half of the chunks) against that of the identity map, the logit lens (``r2_identity``).

Memory: the fit keeps, per read layer, two ``d_model x d_model`` float64 sums per half of the
text (``32 * d_model**2`` bytes per layer: 13 MB on Gemma 3 270M, 410 MB on a model with
``d_model = 3584``; pass ``layers`` to read fewer).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from factlens.components import resid_hook
from factlens.evaluation.attacks import suite_settings
from factlens.evaluation.baseline_cache import BaselineCache
from factlens.evaluation.logit_lens import LogitLensConfig, lens_layers, run_lens
from factlens.evaluation.result import SuiteResult
from factlens.progress_bars import progress_bar

if TYPE_CHECKING:
    from factlens.evaluation.config import EvalConfig

__all__ = ["LinearLensConfig", "LinearLens", "fit_linear_lens", "run_linear_lens"]

_META_KEY = "factlens.linear_lens"


@dataclass(frozen=True)
class LinearLensConfig(LogitLensConfig):
    """Settings of the ``linear_lens`` suite (``EvalConfig(other_suites={"linear_lens": ...})``).

    The :class:`~factlens.evaluation.logit_lens.LogitLensConfig` fields (``layers``, ``top_k``,
    ``folds``, ``selection``) mean the same here; besides them:

    Attributes:
        n_chunks: Chunks of general text the maps are fitted on (``EvalConfig.text.source``).
        seq_len: Tokens per chunk (BOS included and left out of the fit).
        ridge: Ridge penalty on the standardized residual (times each dimension's own variance;
            keeps the solve stable where dimensions are nearly collinear).

    Example:
        >>> LinearLensConfig(n_chunks=16).n_chunks, LinearLensConfig().top_k
        (16, 20)
    """

    n_chunks: int = 128
    seq_len: int = 64
    ridge: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_chunks < 2:
            raise ValueError(f"LinearLensConfig.n_chunks must be an integer >= 2 (two halves for the held-out r2), "
                             f"got {self.n_chunks!r}")
        if self.seq_len < 2:
            raise ValueError(f"LinearLensConfig.seq_len must be an integer >= 2 (BOS and a token), got {self.seq_len!r}")
        if not self.ridge >= 0:
            raise ValueError(f"LinearLensConfig.ridge must be >= 0, got {self.ridge!r}")


@dataclass(frozen=True, eq=False)
class LinearLens:
    """Per layer an affine map of the residual onto the last layer's (``h @ weight[j] + bias[j]``).

    Attributes:
        layers: The mapped layers (``layers[j]`` uses ``weight[j]``, ``bias[j]``).
        weight: ``[len(layers), d_model, d_model]`` float32 (on the CPU as fitted; :meth:`to`).
        bias: ``[len(layers), d_model]`` float32.
        n_tokens: Text positions the maps were fitted on.
        r2: Per layer the held-out share of the last layer's residual variance the map explains.
        r2_identity: The same for the identity map (what the logit lens assumes).
        ridge: The ridge penalty used (on the standardized residual).
        identity: Layers whose map is the identity (the last layer): :meth:`translate` returns
            their residual unchanged, so their reading is exactly the model's output.
    """

    layers: tuple[int, ...]
    weight: torch.Tensor
    bias: torch.Tensor
    n_tokens: int
    r2: tuple[float, ...]
    r2_identity: tuple[float, ...]
    ridge: float
    identity: tuple[int, ...] = ()

    def translate(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """``h`` (``[..., d_model]``, any device and dtype) mapped as the last layer's residual."""
        if layer in self.identity:
            return h
        j = self.layers.index(layer)
        w, b = self.weight[j].to(h.device), self.bias[j].to(h.device)
        return (h.float() @ w + b).to(h.dtype)

    def to(self, device: str | torch.device) -> LinearLens:
        """The same lens with its maps on ``device`` (so :meth:`translate` copies nothing per call)."""
        from dataclasses import replace

        return replace(self, weight=self.weight.to(device), bias=self.bias.to(device))

    def summary(self) -> dict[str, Any]:
        """The fit, JSON-ready (``extra["fit"]`` of the suite)."""
        return {"layers": list(self.layers), "n_tokens": self.n_tokens, "ridge": self.ridge,
                "r2": [_round(x) for x in self.r2], "r2_identity": [_round(x) for x in self.r2_identity],
                "identity": list(self.identity)}

    def save(self, path: str | Path) -> Path:
        """Write the lens as safetensors (the fit in its metadata); refuses to overwrite a file."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists; the lens is not written over it (give another path or delete it)")
        save_file({"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(path),
                  metadata={_META_KEY: json.dumps(self.summary())})
        return path

    @classmethod
    def load(cls, path: str | Path) -> LinearLens:
        """A lens written by :meth:`save`.

        Raises:
            ValueError: The file is not a factlens linear lens.
        """
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(_META_KEY)
            if meta is None:
                raise ValueError(f"{path} is not a factlens linear lens (no {_META_KEY!r} metadata)")
            m = json.loads(meta)
            return cls(tuple(m["layers"]), f.get_tensor("weight"), f.get_tensor("bias"), int(m["n_tokens"]),
                       tuple(_nan(x) for x in m["r2"]), tuple(_nan(x) for x in m["r2_identity"]), float(m["ridge"]),
                       tuple(m.get("identity", ())))


def _round(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


class _Sums:
    """Float64 moment sums of (x = a layer's residual, y = the last layer's) over one half of the text."""

    def __init__(self, d: int):
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.n, self.sx, self.sy, self.xx, self.xy = 0, z(d), z(d), z(d, d), z(d, d)
        self.yy = 0.0  # only the trace of y's second moment is needed (the variance to explain)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.yy += float((y * y).sum())

    def __add__(self, other: _Sums) -> _Sums:
        out = _Sums(self.sx.shape[0])
        out.n, out.sx, out.sy = self.n + other.n, self.sx + other.sx, self.sy + other.sy
        out.xx, out.xy, out.yy = self.xx + other.xx, self.xy + other.xy, self.yy + other.yy
        return out

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The least-squares ``(W, b)`` with ``y ~ x @ W + b``, with a ridge on the standardized x
        (``ridge`` times each dimension's own variance: a few dimensions of huge variance, common
        in residual streams, would otherwise set the penalty for all the others)."""
        mx, my = self.sx / self.n, self.sy / self.n
        cxx = self.xx / self.n - torch.outer(mx, mx)
        cxy = self.xy / self.n - torch.outer(mx, my)
        a = cxx + ridge * torch.diag(torch.diagonal(cxx))
        try:  # Cholesky: ~15x faster than the SVD-based solver at d_model = 640
            w = torch.cholesky_solve(cxy, torch.linalg.cholesky(a))
        except RuntimeError:  # singular (no ridge, or a dimension that never varies in the text):
            w = torch.linalg.lstsq(a, cxy, driver="gelsd").solution  # the minimum-norm solution maps it to nothing
        return w, my - mx @ w

    def r2(self, w: torch.Tensor, b: torch.Tensor) -> float:
        """The share of y's variance (about its mean here) that ``x @ w + b`` explains on these sums."""
        n = self.n
        my = self.sy / n
        sst = self.yy - n * float(my @ my)
        # sum ||y - x w - b||^2 expanded in the sums: yy - 2 tr(w' xy) - 2 b.sy + tr(w' xx w) + 2 b.(sx w) + n b.b
        sse = (self.yy - 2 * float(torch.sum(w * self.xy)) - 2 * float(b @ self.sy) + float(torch.sum(w * (self.xx @ w)))
               + 2 * float(b @ (self.sx @ w)) + n * float(b @ b))
        return 1.0 - sse / sst if sst > 0 else float("nan")


def fit_linear_lens(model, tokens: torch.Tensor, *, layers: Sequence[int] | None = None, ridge: float = 1e-3,
                    batch_size: int = 8) -> LinearLens:
    """Fit the map from each layer's residual (``resid_post``) to the last layer's on ``tokens``.

    Args:
        model: A ``HookedTransformer`` (not changed, no hooks left, not moved).
        tokens: ``[n_chunks, seq_len]`` token ids (e.g. :func:`factlens.data.text.token_chunks`);
            position 0 is left out when the model prepends BOS. The first and the second half of
            the chunks are the two folds of the held-out ``r2`` (contiguous: chunks are consecutive
            pieces of the text, so alternating ones put neighbours of one passage in both folds);
            the maps are fitted on both.
        layers: The layers to map (``None``: every layer). The last layer's map is the identity.
        ridge: Ridge penalty on the standardized residual (times each dimension's variance).
        batch_size: Chunks per forward pass.

    Raises:
        ValueError: Fewer than two chunks, or too few positions per half of them to determine a
            ``d_model x d_model`` map (``d_model + 1``): give more text.

    Example:
        >>> from factlens.testing import tiny_model
        >>> m = tiny_model()
        >>> lens = fit_linear_lens(m, torch.randint(0, m.cfg.d_vocab, (8, 16)), layers=[0, 1])
        >>> lens.weight.shape, lens.r2[-1]
        (torch.Size([2, 32, 32]), 1.0)
    """
    from factlens.tokens import _bos_id

    layers = lens_layers(model, layers)
    last = int(model.cfg.n_layers) - 1
    if tokens.ndim != 2 or tokens.shape[0] < 2:
        raise ValueError(f"the linear lens needs [n_chunks >= 2, seq_len] tokens (two halves), got {tuple(tokens.shape)}")
    start = 1 if _bos_id(model) is not None else 0
    if tokens.shape[1] - start < 1:
        raise ValueError(f"chunks of {tokens.shape[1]} tokens leave no position to fit after BOS")
    d = int(model.cfg.d_model)
    first = tokens.shape[0] // 2  # chunks [0, first) are one fold, the rest (as many or one more) the other
    per_half = first * (tokens.shape[1] - start)
    if per_half < d + 1:
        raise ValueError(f"the linear lens would fit {d + 1} coefficients per output on {per_half} text positions per "
                         f"half of the chunks: give more text (a longer --text-source, or more n_chunks / seq_len: at "
                         f"least {2 * math.ceil((d + 1) / (tokens.shape[1] - start))} chunks of this length)")
    fitted = [x for x in layers if x != last]
    halves = [{x: _Sums(d) for x in fitted} for _ in range(2)]
    store: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def hook(act, hook):
            store[layer] = act[:, start:].detach().to("cpu", torch.float64)
        return hook

    hooks = [(resid_hook(x, "post"), keep(x)) for x in sorted({*fitted, last})]
    rows = torch.arange(tokens.shape[0])
    n_tokens = 0
    for s in progress_bar(range(0, tokens.shape[0], batch_size), desc="linear lens fit", leave=False):
        idx = rows[s:s + batch_size]
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            model(tokens[idx].to(_device(model)), stop_at_layer=last + 1)
        n_tokens += store[last].shape[0] * store[last].shape[1]
        for half in (0, 1):
            sel = idx < first if half == 0 else idx >= first
            if sel.any():
                y = store[last][sel].reshape(-1, d)
                for x in fitted:
                    halves[half][x].add(store[x][sel].reshape(-1, d), y)
        store.clear()
    return _finish(layers, fitted, halves, d, ridge, n_tokens)


def _device(model) -> torch.device:
    """Where the model's inputs go (``cfg.device``, else its first parameter's device)."""
    dev = getattr(model.cfg, "device", None)
    return torch.device(dev) if dev is not None else next(model.parameters()).device


def _finish(layers: list[int], fitted: list[int], halves: list[dict[int, _Sums]], d: int, ridge: float,
            n_tokens: int) -> LinearLens:
    weight = torch.zeros(len(layers), d, d)
    bias = torch.zeros(len(layers), d)
    r2, r2_id = [], []
    eye, zero = torch.eye(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    for j, x in enumerate(layers):
        if x not in fitted:  # the last layer: its own residual, the model's output
            weight[j] = torch.eye(d)
            r2.append(1.0)
            r2_id.append(1.0)
            continue
        a, b = halves[0][x], halves[1][x]
        held = [b.r2(*a.solve(ridge)), a.r2(*b.solve(ridge))]  # fit on one half, score on the other
        r2.append(float(np.mean(held)))
        r2_id.append(float(np.mean([a.r2(eye, zero), b.r2(eye, zero)])))
        w, c = (a + b).solve(ridge)
        weight[j], bias[j] = w.float(), c.float()
    return LinearLens(tuple(layers), weight, bias, n_tokens, tuple(r2), tuple(r2_id), float(ridge),
                      tuple(x for x in layers if x not in fitted))


def _fitter(config: EvalConfig, st: LinearLensConfig):
    """The suite's fit: chunks of ``config.text`` with the lens's own size, the same for every model."""
    from factlens.data.text import load_texts, token_chunks

    def fit(model):
        texts = load_texts(config.text.source)
        texts = [texts[i] for i in random.Random(config.seed).sample(range(len(texts)), len(texts))]  # passages
        chunks = token_chunks(model, texts, seq_len=st.seq_len, n_chunks=st.n_chunks)  # from all over the text
        lens = fit_linear_lens(model, chunks, layers=st.layers, ridge=st.ridge, batch_size=max(1, config.batch_size // 2))
        return lens.to(_device(model)).translate, {**lens.summary(), "text": config.text.source or "builtin",
                                                   "n_chunks": int(chunks.shape[0])}
    return fit


def run_linear_lens(model, task, *, original=None, config: EvalConfig | None = None,
                    baselines: BaselineCache | None = None, linear_lens_config: LinearLensConfig | None = None
                    ) -> SuiteResult:
    """Read the edited facts at every layer through a linear map fitted to each model (see the module docstring).

    Args:
        model: The evaluated (edited) model; not changed.
        task: The task (forget facts with their answers and edit targets; maintain facts).
        original: The unedited model, read through its own lens at the same layers (the baselines).
        config: Evaluation settings (``text.source`` for the fit, ``batch_size``, ``seed``).
        baselines: Cache of computations on ``original``.
        linear_lens_config: The suite's settings (default: ``config.suite_config("linear_lens")``).

    Returns:
        The metrics of :func:`~factlens.evaluation.logit_lens.run_logit_lens` named
        ``linear_lens_*``; ``extra`` as there, plus ``fit`` (``model`` and ``original``: each
        lens's layers, tokens, held-out ``r2`` and ``r2_identity``, text).

    Raises:
        ValueError: No forget facts, fewer forget facts than folds, a layer the model lacks, or
            too little text for two chunks.

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> p = planted_fact_model()
        >>> r = run_linear_lens(p.model, p.task, original=p.model,
        ...                     linear_lens_config=LinearLensConfig(n_chunks=16, seq_len=16))
        >>> r["linear_lens_forget_accuracy"].value, r.extra["fit"]["model"]["r2"][-1]
        (1.0, 1.0)
    """
    from factlens.evaluation.config import or_default

    config = or_default(config)
    st = suite_settings(config, "linear_lens", LinearLensConfig, linear_lens_config)
    key = (st.n_chunks, st.seq_len, st.ridge, config.text.source, config.seed)
    return run_lens(model, task, name="linear_lens", settings=st, config=config, fit=_fitter(config, st),
                    fit_key=key, original=original, baselines=baselines)
