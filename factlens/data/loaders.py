"""Loaders: built-in fact sets and the paper's real formats.

- ``sports_facts(path=None)``: built-in athletes, or the Sports Facts CSV of Nanda et al.
  (columns ``athlete``, ``sport``, ``prompt``, ``inject_sport_*``) from a local path or a
  Hugging Face dataset name.
- ``counterfact(path=None, mcq_path=None)``: built-in CounterFact-style set, or CounterFact
  in the ROME JSON layout, joined on ``case_id`` with the multiple-choice questions
  (JSONL/parquet with ``question``, ``target_true``, ``targets_false``, ``prompt_id``).
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from factlens.data.formats import ONE_SHOT_SPORTS
from factlens.data.records import FactDataset, FactRecord, MultipleChoice, Neighbor

__all__ = ["sports_facts", "counterfact", "SPORTS", "SPORTS_MCQ_OPTIONS"]

SPORTS = ("basketball", "baseball", "football")
SPORTS_MCQ_OPTIONS = ("basketball", "baseball", "football", "golf")


def _builtin(name: str) -> Any:
    return json.loads(resources.files("factlens.data").joinpath("builtin", name).read_text())


def _sports_mcq(athlete: str, sport: str, target: str | None) -> MultipleChoice:
    return MultipleChoice(
        question=f"Which sport does {athlete} play?",
        options=SPORTS_MCQ_OPTIONS,
        answer_index=SPORTS_MCQ_OPTIONS.index(sport),
        target_index=SPORTS_MCQ_OPTIONS.index(target) if target in SPORTS_MCQ_OPTIONS else None,
    )


def sports_record(athlete: str, sport: str, *, template: str = ONE_SHOT_SPORTS, target_new: str | None = None,
                  id: str = "") -> FactRecord:
    """A sports fact with the paper's one-shot prompt and a multiple-choice question."""
    sport = sport.strip().lower()
    if sport not in SPORTS_MCQ_OPTIONS:
        raise ValueError(f"unknown sport {sport!r} for {athlete!r}; expected one of {SPORTS}")
    return FactRecord(subject=athlete.strip(), template=template, answer=sport, target_new=target_new,
                      relation="sport", id=id or athlete.strip(), mcq=_sports_mcq(athlete, sport, target_new))


def _rows_from(path: str | Path, *, split: str = "train") -> list[dict[str, Any]]:
    p = Path(path)
    if p.exists():
        if p.suffix == ".csv":
            with p.open(newline="") as f:
                return list(csv.DictReader(f))
        if p.suffix == ".jsonl":
            return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
        if p.suffix == ".json":
            d = json.loads(p.read_text())
            return d if isinstance(d, list) else d.get("data", d.get("records", []))
        if p.suffix == ".parquet":
            import pandas as pd

            return pd.read_parquet(p).to_dict("records")
        raise ValueError(f"unsupported file type {p.suffix!r} for {p}; use .csv, .json, .jsonl or .parquet")
    if "/" in str(path) and not str(path).startswith((".", "/")):
        try:
            import datasets
        except ImportError as e:  # pragma: no cover
            raise ImportError("loading a Hugging Face dataset needs the datasets package") from e
        try:
            return list(datasets.load_dataset(str(path), split=split))
        except Exception as e:
            raise OSError(f"could not load Hugging Face dataset {path!r} ({type(e).__name__}: {e}); "
                          "pass a local file path instead (the Hub may be unreachable)") from e
    raise FileNotFoundError(f"{path} does not exist (and is not a Hugging Face dataset name like 'owner/name')")


def sports_facts(path: str | Path | None = None, *, template: str = ONE_SHOT_SPORTS, split: str = "train") -> FactDataset:
    """Sports facts: athlete -> basketball / baseball / football.

    Args:
        path: ``None`` for the built-in set, else the paper's CSV (local path or Hugging
            Face dataset name). The CSV's ``inject_sport_without_golf`` column becomes the
            record's ``target_new`` when present.
        template: Prompt template (default: the paper's one-shot prompt).

    Example:
        >>> ds = sports_facts()
        >>> len(ds) >= 300, ds.candidates
        (True, ('basketball', 'baseball', 'football'))
    """
    if path is None:
        rows = _builtin("sports.json")
        recs = [sports_record(r["athlete"], r["sport"], template=template, id=f"sports:{i}") for i, r in enumerate(rows)]
        return FactDataset(tuple(recs), name="sports", candidates=SPORTS, meta={"source": "builtin"})
    rows = _rows_from(path, split=split)
    if not rows or "athlete" not in rows[0] or "sport" not in rows[0]:
        raise ValueError(f"{path}: expected columns 'athlete' and 'sport' (the Sports Facts CSV layout)")
    recs, seen = [], set()
    for i, r in enumerate(rows):
        name = str(r["athlete"]).strip()
        if name in seen:
            continue
        seen.add(name)
        tgt = r.get("inject_sport_without_golf") or None
        rid = str(r.get("") or r.get("Unnamed: 0") or i)
        recs.append(sports_record(name, r["sport"], template=template, target_new=tgt.strip() if tgt else None,
                                  id=f"sports:{rid}"))
    return FactDataset(tuple(recs), name="sports", candidates=SPORTS, meta={"source": str(path)})


def _cf_record(d: dict[str, Any], mcq: dict[str, Any] | None) -> FactRecord:
    if "requested_rewrite" in d:  # ROME layout
        rw = d["requested_rewrite"]
        true, new = rw["target_true"]["str"].strip(), rw["target_new"]["str"].strip()
        template, subject, rel = rw["prompt"], rw["subject"], rw["relation_id"]
        paras = tuple(d.get("paraphrase_prompts", ()))
        neigh = tuple(Neighbor(p, true) if isinstance(p, str) else Neighbor(p["prompt"], p["answer"])
                      for p in d.get("neighborhood_prompts", ()))
    else:  # factlens built-in layout
        true, new = d["target_true"].strip(), d["target_new"].strip()
        template, subject, rel = d["prompt"], d["subject"], d["relation_id"]
        paras = tuple(d.get("paraphrase_prompts", ()))
        neigh = tuple(Neighbor(p, true) if isinstance(p, str) else Neighbor(p["prompt"], p["answer"])
                      for p in d.get("neighborhood_prompts", ()))
        mcq = mcq or d.get("mcq")
    mc = None
    if mcq is not None:
        if "options" in mcq:
            opts = tuple(o.strip() for o in mcq["options"])
        else:
            opts = (mcq["target_true"].strip(),) + tuple(o.strip() for o in mcq["targets_false"])
        opts = tuple(dict.fromkeys(opts))
        if true in opts:
            mc = MultipleChoice(mcq["question"], opts, opts.index(true), opts.index(new) if new in opts else None)
    return FactRecord(subject=subject, template=template, answer=true, target_new=new, relation=rel,
                      id=str(d["case_id"]), paraphrases=paras, neighborhood=neigh, mcq=mc)


def counterfact(path: str | Path | None = None, mcq_path: str | Path | None = None, *, split: str = "train") -> FactDataset:
    """CounterFact facts with edit targets, paraphrases, neighborhoods and multiple choice.

    Args:
        path: ``None`` for the built-in set; else CounterFact in the ROME JSON layout (local
            file or Hugging Face dataset name).
        mcq_path: Multiple-choice questions (JSONL or parquet with ``question``,
            ``target_true``, ``targets_false``, ``prompt_id``), joined on ``case_id``.

    Example:
        >>> cf = counterfact()
        >>> r = cf[0]
        >>> r.prompt, r.answer, r.target_new
        ('The capital of France is', 'Paris', 'Rome')
    """
    if path is None:
        rows = _builtin("counterfact.json")
        src = "builtin"
    else:
        rows = _rows_from(path, split=split)
        src = str(path)
    mcqs: dict[str, dict] = {}
    if mcq_path is not None:
        for m in _rows_from(mcq_path, split=split):
            mcqs[str(m["prompt_id"])] = m
    recs = [_cf_record(d, mcqs.get(str(d["case_id"]))) for d in rows]
    return FactDataset(tuple(recs), name="counterfact", candidates=(), meta={"source": src, "mcq": str(mcq_path)})


def from_records(records: Iterable[FactRecord], name: str = "facts", candidates: Iterable[str] = ()) -> FactDataset:
    """A dataset from your own records."""
    return FactDataset(tuple(records), name=name, candidates=tuple(candidates))
