"""Hyper-parameter sweep of the editor with the paper's train-time objective.

:func:`sweep` edits the model once per ``(lr, l_forget)`` pair (always on a copy) and scores
every edited model with

``score = (1 - forget_acc) + edit_acc + maintain_acc + text_acc``

* ``forget_acc``: the true answer wins among the candidates on ``task.forget``;
* ``edit_acc``: the edit target wins on ``task.forget`` (inject tasks). Unlearning tasks
  have no target: the column is ``NaN`` and adds 0 to the score;
* ``maintain_acc``: the true answer wins on ``task.maintain`` (or the ``maintain=`` facts);
* ``text_acc``: next-token accuracy on general text (:mod:`factlens.data.text`); by default the
  built-in passages nothing trains on, not the built-in text the editor's KL term keeps (which
  the score read before 2026-12-05: its 16 chunks were the editor's first 16 training chunks).

What the selection sees is not held out from it: ``task.maintain`` is the split the evaluation
reports as the held-out maintain accuracy, so a config chosen here and then evaluated on the same
task has had its maintain accuracy looked at. Pass ``maintain=`` a validation split (facts the
evaluation does not score) to keep the reported numbers out of the selection.

Prompts are in the config's ``train_format``. Robustness metrics (other formats,
relearning, probes, soft prompts) are never used, so the selection cannot overfit them.

Resuming: with ``out_dir``, every finished run is appended to ``out_dir/sweep.jsonl``
(a header record, then one record per run keyed by a stable hash of its full
:class:`EditConfig`). A rerun skips the finished keys, and refuses to mix results of a
different task, mask, model or general text.

Example:
    >>> from factlens.testing import planted_fact_model
    >>> from factlens.components import Mask
    >>> pf = planted_fact_model()
    >>> base = EditConfig(steps=15, batch_size=None, grad_accum=1, l_sft=0.0)
    >>> res = sweep(pf.model, Mask(frozenset({pf.lookup_mlp})), pf.task, lrs=(1e-4, 3e-2), base_config=base,
    ...             show_progress=False)
    >>> len(res.table), res.best_config.lr, list(res.table["edit_acc"])
    (2, 0.03, [0.0, 1.0])
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from factlens.components import Mask, ModelShape
from factlens.editing.config import EditConfig
from factlens.editing.editor import edit
from factlens.progress_bars import progress, progress_bar, takes_show_progress
from factlens.strict_json import strict_dumps

__all__ = ["SweepResult", "sweep", "score_edit", "config_key", "text_accuracy"]

SWEEP_FILE = "sweep.jsonl"
METRICS = ("forget_acc", "edit_acc", "maintain_acc", "text_acc")


def config_key(config: EditConfig) -> str:
    """Stable 16-hex-digit hash of a config (sorted-key JSON of :meth:`EditConfig.to_dict`)."""
    blob = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class SweepResult:
    """The result of :func:`sweep`.

    Attributes:
        table: One row per config: ``lr, l_forget, key, forget_acc, edit_acc,
            maintain_acc, text_acc, score, seconds, final_loss, cached, diverged`` (a pandas DataFrame).
        best_config: The config with the highest score.
        best_score: Its score.
    """

    table: Any
    best_config: EditConfig
    best_score: float

    def to_dict(self) -> dict[str, Any]:
        rows = json.loads(self.table.to_json(orient="records"))
        return {"table": rows, "best_config": self.best_config.to_dict(), "best_score": self.best_score}

    def plot(self, *, title: str | None = None):
        """Score vs learning rate (log axis), one line per ``l_forget``."""
        import plotly.graph_objects as go

        fig = go.Figure()
        for l1, part in self.table.sort_values("lr").groupby("l_forget", sort=True):
            fig.add_trace(go.Scatter(x=part["lr"], y=part["score"], mode="lines+markers", name=f"l_forget={l1:g}",
                                     hovertemplate="lr=%{x:.3g}<br>score=%{y:.3f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[self.best_config.lr], y=[self.best_score], mode="markers", name="best",
                                 marker={"symbol": "star", "size": 14}))
        fig.update_layout(title=title or "Hyper-parameter sweep: (1 - forget) + edit + maintain + text accuracy",
                          xaxis_title="learning rate", yaxis_title="score", xaxis_type="log")
        return fig


def text_accuracy(model, chunks: torch.Tensor, *, batch_size: int = 2) -> float:
    """Next-token accuracy (argmax) over all positions of ``[n, seq_len]`` token chunks."""
    from factlens.tokens import scoring_logits

    right = total = 0
    with torch.no_grad():
        for s in range(0, chunks.shape[0], batch_size):
            toks = chunks[s:s + batch_size].to(model.cfg.device)  # chunks made on the CPU, model on a GPU
            resid = model(toks, stop_at_layer=model.cfg.n_layers)[:, :-1]
            for i in range(resid.shape[0]):  # one chunk at a time: [pos, d_vocab] logits only
                pred = scoring_logits(model, resid[i]).argmax(-1)  # float32 in bf16: no rounded ties
                right += int((pred == toks[i, 1:]).sum())
                total += int(toks.shape[1] - 1)
    return right / max(total, 1)


def score_edit(model, task, *, fmt: str = "default", chunks: torch.Tensor | None = None,
               batch_size: int = 16, maintain=None, candidate_score: str = "sum") -> dict[str, float]:
    """The sweep's metrics and score for one (edited) model (``maintain``: the facts of
    ``maintain_acc``, default ``task.maintain``; ``candidate_score``: how candidates are compared,
    :attr:`factlens.evaluation.EvalConfig.candidate_score`, the evaluation's rule).

    Returns:
        ``forget_acc, edit_acc (NaN for unlearning), maintain_acc, text_acc (NaN without
        chunks), score`` (NaN terms add 0).

    Example:
        >>> from factlens.testing import planted_fact_model
        >>> pf = planted_fact_model()
        >>> score_edit(pf.model, pf.task)["forget_acc"]
        1.0
    """
    from factlens.data.formats import format_prompts
    from factlens.prompt_scores import score_prompts

    forget = format_prompts(task.forget, fmt)
    maintain = format_prompts(task.maintain if maintain is None else maintain, fmt)
    if not forget:
        raise ValueError(f"the task's forget facts have no prompts in format {fmt!r}")
    f = score_prompts(model, forget, batch_size=batch_size, candidate_score=candidate_score)
    m = score_prompts(model, maintain, batch_size=batch_size, candidate_score=candidate_score) if maintain else None
    out = {"forget_acc": f.accuracy(),
           "edit_acc": float(f.target_wins.mean()) if task.objective == "inject" else float("nan"),
           "maintain_acc": m.accuracy() if m is not None else float("nan"),
           "text_acc": text_accuracy(model, chunks) if chunks is not None else float("nan")}
    terms = [1.0 - out["forget_acc"], out["edit_acc"], out["maintain_acc"], out["text_acc"]]
    out["score"] = float(sum(t for t in terms if not math.isnan(t)))
    return out


# --- resumable storage ------------------------------------------------------------------------


def _normalize(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def _facts_digest(task) -> str:
    """sha256 of every fact of the task's splits (targets, candidates and formats included)."""
    return _digest({name: _facts(ds) for name, ds in (("forget", task.forget), ("retain", task.retain),
                                                      ("maintain", task.maintain))})


def _facts(ds) -> list:
    """A dataset's candidates and records, as JSON values."""
    return [list(ds.candidates), [r.to_dict() for r in ds]]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _header(model, mask: Mask, task, general_text, n_text_chunks: int, text_seq_len: int,
            batch_size: int, maintain=None, candidate_score: str = "sum") -> dict[str, Any]:
    """What a finished run's numbers depend on besides its config: a resumed sweep reuses runs only
    when all of it is the same (format 2 adds the weights, every fact and the batch size; format 3
    the held-out built-in text and the maintain facts; a stale file of an older format is refused,
    never read as this setup's)."""
    from factlens.evaluation.baseline_cache import _fingerprint

    return _normalize({
        "type": "header",
        "format": 3,
        "weights": _fingerprint(model),
        "facts": _facts_digest(task),
        "batch_size": batch_size,
        "task": task.summary(),
        "forget_ids": [r.id for r in task.forget],
        "mask": mask.labels,
        "model": {"name": getattr(model.cfg, "model_name", ""), "d_vocab": model.cfg.d_vocab,
                  **ModelShape.of(model).to_dict()},
        # None: the built-in held-out passages (format 3; format 2 read the editor's own built-in text)
        "general_text": None if general_text is None else str(general_text),
        "maintain": None if maintain is None else _digest(_facts(maintain)),
        "n_text_chunks": n_text_chunks,
        "text_seq_len": text_seq_len,
        # only when not the default, so that a sweep written before the setting existed resumes
        **({"candidate_score": candidate_score} if candidate_score != "sum" else {}),
    })


def _read_runs(path: Path, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Finished runs in ``path`` by key; raises if its header differs from ``header``."""
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    lines = path.read_text().splitlines()
    try:
        stored = json.loads(lines[0])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} does not start with a sweep header record; use another out_dir") from e
    if stored.get("type") != "header":
        raise ValueError(f"{path} does not start with a sweep header record; use another out_dir")
    diffs = sorted(k for k in set(stored) | set(header) if stored.get(k) != header.get(k))
    if diffs:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r} vs now {header.get(k)!r}" for k in diffs)
        raise ValueError(f"{path} holds a sweep of a different setup ({detail}). Use another out_dir (or delete the "
                         "file) instead of mixing results of different tasks, facts, masks, models, weights or "
                         "general text.")
    runs = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a partial line from an interrupted write: that run is redone (_append ends the line first)
        if rec.get("type") == "run":
            runs[rec["key"]] = rec
    return runs


def _append(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line; a cut-off last line (an interrupted write) is ended first.

    Written straight after such a line, the record joined it: unreadable too, its finished run
    was redone at every resume."""
    torn = _ends_torn(path)
    with path.open("a") as f:
        f.write(("\n" if torn else "") + strict_dumps(_normalize(record), indent=None, sort_keys=True) + "\n")
        f.flush()


def _ends_torn(path: Path) -> bool:
    """Whether ``path`` is a non-empty file whose last character is not a newline."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) != b"\n"


# --- the sweep ------------------------------------------------------------------------------


@takes_show_progress
def sweep(model, mask: Mask, task, *, lrs: Sequence[float] = (2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4),
          l_forget: Sequence[float] = (1.0,), base_config: EditConfig = EditConfig(), out_dir: str | Path | None = None,
          general_text: str | Path | None = None, n_text_chunks: int = 16, text_seq_len: int = 64,
          batch_size: int = 16, maintain=None, candidate_score: str = "sum",
          show_progress: bool | None = None) -> SweepResult:
    """Edit with every ``(lr, l_forget)`` pair and pick the config with the best train-time score.

    A task with chunks (Sequential-CounterFact-Editing) is edited chunk by chunk
    (:func:`~factlens.editing.edit_sequential`), as the runner edits it. A config whose edit
    diverges (the editor's ``FloatingPointError``) is a row with ``diverged`` true and no
    score, stored like any other run; the sweep goes on.

    Args:
        model: A ``HookedTransformer`` (never modified: every edit works on a copy).
        mask: Components to edit.
        task: A :class:`factlens.tasks.Task`.
        lrs: Learning rates.
        l_forget: Forget-loss weights.
        base_config: All other settings (``lr`` and ``l_forget`` are replaced).
        out_dir: Folder for ``sweep.jsonl`` (resumable); ``None``: nothing is written.
        general_text: Source of the general text for ``text_acc``
            (:func:`factlens.data.text.load_texts`; ``None``: the built-in held-out passages,
            which nothing trains on). Giving ``base_config.sft_source`` here scores the text
            the edit's general-text term (next-token cross-entropy on that text) trains on,
            and warns.
        maintain: The facts ``maintain_acc`` scores (a ``FactDataset``; ``None``:
            ``task.maintain``, which the evaluation reports as held out, see above).
        n_text_chunks: Text chunks scored for ``text_acc``.
        text_seq_len: Tokens per chunk.
        batch_size: Prompts per forward pass when scoring.
        candidate_score: How candidates are compared when scoring
            (:attr:`factlens.evaluation.EvalConfig.candidate_score`): give the rule the evaluation
            will use, so that the sweep picks by the accuracies it will report.
        show_progress: Draw (``True``) or hide (``False``) the bar over configs; ``None``
            (default) follows :func:`factlens.progress`. The edits inside show no bars.

    Returns:
        The table (one row per config, in grid order), the best config and its score.

    Raises:
        ValueError: An empty grid, ``out_dir`` is a file (or under one), or holds a sweep of another
            task/mask/model.
    """
    from factlens.data.text import load_texts, same_text_source, token_chunks
    from factlens.files import check_output

    from factlens.prompt_scores import CANDIDATE_SCORES

    if candidate_score not in CANDIDATE_SCORES:  # before the first edit, not after it
        raise ValueError(f"candidate_score must be one of {list(CANDIDATE_SCORES)}, got {candidate_score!r}")
    lrs, l_forget = list(lrs), list(l_forget)
    if not lrs or not l_forget:
        raise ValueError(f"the grid is empty: lrs={lrs}, l_forget={l_forget}")
    if not isinstance(mask, Mask) or len(mask) == 0:
        raise ValueError(f"mask must be a non-empty factlens.Mask, got {mask!r}")
    configs = [base_config.replace(lr=float(lr), l_forget=float(l1)) for l1 in l_forget for lr in lrs]
    if same_text_source(general_text, base_config.sft_source):
        warnings.warn(f"general_text is the editor's sft_source ({str(general_text)!r}): text_acc scores text the edit's "
                      "general-text (cross-entropy) term trains on, which favours configs that keep it; give another text (or None: the built-in "
                      "held-out passages)", stacklevel=2)
    header = _header(model, mask, task, general_text, n_text_chunks, text_seq_len, batch_size, maintain,
                     candidate_score)
    path = None
    done: dict[str, dict[str, Any]] = {}
    if out_dir is not None:
        # out_dir a file (or under one) failed in mkdir with a bare FileExistsError / NotADirectoryError
        path = check_output(Path(out_dir) / SWEEP_FILE, what="sweep log", ours=lambda head: True)  # header: _read_runs
        path.parent.mkdir(parents=True, exist_ok=True)
        done = _read_runs(path, header)
        if not path.is_file() or path.stat().st_size == 0:
            _append(path, header)
    chunks = None
    todo = [c for c in configs if config_key(c) not in done]
    if todo:
        texts = load_texts(general_text, held_out=general_text is None)
        chunks = token_chunks(model, texts, seq_len=text_seq_len, n_chunks=n_text_chunks)
    rows = []
    stored = set(done)  # runs read from sweep.jsonl (a config listed twice is run once, and not "cached")
    for cfg in progress_bar(configs, desc="sweep"):
        key = config_key(cfg)
        cached = key in stored
        if key in done:
            rec = done[key]
        else:
            rec = done[key] = _run_one(model, mask, task, cfg, chunks, batch_size, maintain, candidate_score)
            if path is not None:
                _append(path, rec)
        m = rec["metrics"]
        rows.append({"lr": cfg.lr, "l_forget": cfg.l_forget, "key": key,
                     **{k: (float("nan") if m.get(k) is None else m[k]) for k in (*METRICS, "score")},
                     "seconds": rec.get("seconds"), "final_loss": rec.get("final_loss"), "cached": cached,
                     "diverged": "diverged" in rec})
    return _result(rows, configs)


def _run_one(model, mask, task, cfg: EditConfig, chunks, batch_size: int, maintain=None,
             candidate_score: str = "sum") -> dict[str, Any]:
    """One grid point: edit a copy (chunk by chunk for a task with chunks, as the runner does) and
    score it; a run that diverges is a row with no metrics (it aborted the whole sweep, and every
    resume of it, before)."""
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"type": "run", "key": config_key(cfg), "config": cfg.to_dict()}
    try:
        with progress(False):  # one bar: over the configs
            if getattr(task, "chunks", None):  # Sequential-CounterFact-Editing: edit() would train all chunks at once
                from factlens.editing.sequential import edit_sequential

                res = edit_sequential(model, mask, task, config=cfg)
            else:
                res = edit(model, mask, task, config=cfg, inplace=False)
            metrics = score_edit(res.model, task, fmt=cfg.train_format, chunks=chunks, batch_size=batch_size,
                                 maintain=maintain, candidate_score=candidate_score)
    except FloatingPointError as e:  # the editor's NaN/inf guard (the model is restored)
        return {**rec, "metrics": {}, "final_loss": float("nan"), "diverged": str(e), "seconds": time.perf_counter() - t0}
    history = res.history
    final_loss = history[-1]["loss"] if history else float("nan")
    del res  # discard the edited copy
    return {**rec, "metrics": metrics, "final_loss": final_loss, "seconds": time.perf_counter() - t0}


def _result(rows: list[dict[str, Any]], configs: list[EditConfig]) -> SweepResult:
    import pandas as pd

    table = pd.DataFrame(rows)
    scores = table["score"].astype(float)
    if scores.isna().all():
        raise ValueError("every run of the sweep has a NaN score (diverged runs have no score: lower the learning rates)")
    best = int(scores.fillna(-math.inf).to_numpy().argmax())
    return SweepResult(table=table, best_config=configs[best], best_score=float(scores.iloc[best]))
