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
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from factlens.data.formats import ONE_SHOT_SPORTS
from factlens.data.records import FactDataset, FactRecord, MultipleChoice, Neighbor, string_list
from factlens.files import looks_local

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
    """A sports fact with the paper's one-shot prompt and a multiple-choice question.

    ``sport`` must be one of :data:`SPORTS`: golf is the one-shot prompt's example and an edit
    target only, never an athlete's answer (it is not among the dataset's scoring candidates;
    a golfer was accepted although the error listed three sports).
    """
    sport = sport.strip().lower()
    if sport not in SPORTS:
        raise ValueError(f"unknown sport {sport!r} for {athlete!r}; expected one of {SPORTS} (golf is only the "
                         "one-shot example and an edit target, never an athlete's sport)")
    return FactRecord(subject=athlete.strip(), template=template, answer=sport, target_new=target_new,
                      relation="sport", id=id or athlete.strip(), mcq=_sports_mcq(athlete, sport, target_new))


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Excel, Notepad) is not text
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text ({e}); save the file as UTF-8") from e


def _json_rows(p: Path) -> list[Any]:
    try:
        d = json.loads(_read_text(p))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    if isinstance(d, list):
        return d
    if isinstance(d, dict):
        for key in ("data", "records"):
            if isinstance(d.get(key), list):
                return d[key]
        raise ValueError(f"{p}: a JSON object with keys {sorted(d)[:20]} holds no list of records; expected a list "
                         "of records or an object with a 'data' or 'records' list")
    raise ValueError(f"{p}: expected a JSON list of records, found a {type(d).__name__}")


def _jsonl_rows(p: Path) -> list[Any]:
    rows = []
    for n, line in enumerate(_read_text(p).splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}, line {n}: not valid JSON ({e})") from e
    return rows


def _csv_rows(p: Path) -> list[dict[str, Any]]:
    """The rows of a CSV with a header; a row with too many or too few fields raises, naming its physical
    line(s) in the file (a quoted field may span lines, as the Sports Facts prompts do, so the record
    number is not the line number). ``utf-8-sig``: Excel's "CSV UTF-8" starts with a byte-order mark,
    which otherwise became part of the first column's name."""
    rows = []
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for r in reader:
                if None in r:
                    raise ValueError(f"{p}, {_lines(reader.line_num, r)}: more fields than the "
                                     f"{len(reader.fieldnames or ())} header columns")
                short = [k for k, v in r.items() if v is None]
                if short:
                    raise ValueError(f"{p}, {_lines(reader.line_num, r)}: too few fields (missing {short}); every "
                                     f"row needs the header's {len(reader.fieldnames or ())} columns")
                rows.append(r)
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text ({e}); save the file as UTF-8") from e
    return rows


def _lines(end: int, row: dict[Any, Any]) -> str:
    """``"line N"`` or ``"lines M-N"``: where a CSV record lies, from the reader's ``line_num`` (the line
    it ends on) and the line breaks inside its quoted fields.

    Example:
        >>> _lines(5, {"a": "x"}), _lines(5, {"a": "x\\ny", None: ["z"]})
        ('line 5', 'lines 4-5')
    """
    values = [v for v in row.values() if isinstance(v, str)]
    values += [x for v in row.values() if isinstance(v, list) for x in v if isinstance(x, str)]
    start = end - sum(v.count("\n") for v in values)
    return f"line {end}" if start == end else f"lines {start}-{end}"


def _plain(value: Any) -> Any:
    """A parquet row's value as JSON would give it: arrays as lists, missing values (NaN, NA) as None.

    pandas hands list columns over as numpy arrays (two equal rows then fail ``==``) and
    missing strings as NaN (which ``or None`` keeps, being truthy).
    """
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    try:
        import pandas as pd

        return None if pd.isna(value) else value
    except (TypeError, ValueError):
        return value


def _rows_from(path: str | Path, *, split: str = "train") -> list[dict[str, Any]]:
    """The records of a local file or Hugging Face dataset (raises when it holds none)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder; pass the data file inside it (.csv, .json, .jsonl or .parquet)")
    if p.exists():
        readers = {".csv": _csv_rows, ".jsonl": _jsonl_rows, ".json": _json_rows}
        if p.suffix == ".parquet":
            import pandas as pd

            rows = [_plain(r) for r in pd.read_parquet(p).to_dict("records")]
        elif p.suffix in readers:
            rows = readers[p.suffix](p)
        else:
            raise ValueError(f"unsupported file type {p.suffix!r} for {p}; use .csv, .json, .jsonl or .parquet")
        if not rows:
            raise ValueError(f"{p} holds no records")
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
        if bad is not None:
            raise ValueError(f"{p}: record {bad} is a {type(rows[bad]).__name__}, not an object with named fields")
        return rows
    if "/" in str(path) and not looks_local(str(path)):
        try:
            import datasets
        except ImportError as e:  # pragma: no cover
            raise ImportError("loading a Hugging Face dataset needs the datasets package") from e
        try:
            return list(datasets.load_dataset(str(path), split=split))
        except Exception as e:
            raise OSError(f"could not load Hugging Face dataset {path!r} ({type(e).__name__}: {e}); "
                          "pass a local file path instead (the Hub may be unreachable)") from e
    raise FileNotFoundError(f"{path} does not exist (a local path: check it; a Hugging Face dataset name looks like "
                            "'owner/name')")  # a mistyped 'data/x/y.csv' was sent to the Hub and failed there


def sports_facts(path: str | Path | None = None, *, template: str = ONE_SHOT_SPORTS, split: str = "train") -> FactDataset:
    """Sports facts: athlete -> basketball / baseball / football.

    Args:
        path: ``None`` for the built-in set, else the paper's CSV (local path or Hugging
            Face dataset name). Every row needs ``athlete`` and ``sport`` strings (else
            ``ValueError`` naming the file and record; a sport other than basketball, baseball
            or football too). The CSV's ``inject_sport_without_golf`` column (lower-cased; it
            must name another of these sports or golf, or be empty) is kept as the record's
            ``target_new`` when present, but
            :func:`factlens.tasks.sports_athlete_editing` does not use it: the task draws its
            own seeded edit target among the other sports.
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
    recs, seen, repeated = [], {}, []
    for i, r in enumerate(rows):
        name, sport, tgt = _sports_row(r, f"{path}: record {i}")
        if name in seen:
            if sport.strip().lower() != seen[name]:
                raise ValueError(f"{path}: athlete {name!r} is listed with two sports ({seen[name]!r} and "
                                 f"{sport.strip().lower()!r}); keep one row per athlete")
            repeated.append(name)
            continue
        seen[name] = sport.strip().lower()
        rid = str(next((r[k] for k in ("", "Unnamed: 0") if r.get(k) is not None and str(r[k]) != ""), i))
        try:
            recs.append(sports_record(name, sport, template=template, target_new=tgt, id=f"sports:{rid}"))
        except ValueError as e:
            raise ValueError(f"{path}: record {i}: {e}") from e
    if repeated:
        warnings.warn(f"{path}: left out {len(repeated)} repeated athlete row(s): {repeated[:10]}", UserWarning,
                      stacklevel=2)
    return FactDataset(tuple(recs), name="sports", candidates=SPORTS, meta={"source": str(path)})


def _sports_row(r: dict[str, Any], where: str) -> tuple[str, str, str | None]:
    """The athlete (stripped), sport and edit target (stripped, lower case) of a Sports Facts row; checked
    on every row (a row without a sport, or with a number for one, crashed deep inside with a bare
    KeyError; an edit target 'Basketball' or 'hockey' became a scoring candidate and lost its
    multiple-choice index)."""
    for key in ("athlete", "sport"):
        if not isinstance(r.get(key), str):
            found = f"no {key!r} value" if r.get(key) is None else f"the {type(r[key]).__name__} {r[key]!r}"
            raise ValueError(f"{where} (athlete {r.get('athlete', '?')!r}): {key!r} must be a string, found {found} "
                             f"(fields {sorted(r)[:12]}); the Sports Facts layout has 'athlete' and 'sport' columns")
    tgt = r.get("inject_sport_without_golf") or None
    if tgt is not None and not isinstance(tgt, str):
        raise ValueError(f"{where} (athlete {r['athlete']!r}): inject_sport_without_golf must be a sport name, "
                         f"found the {type(tgt).__name__} {tgt!r}")
    if tgt is not None:
        tgt = tgt.strip().lower() or None
    sport = r["sport"].strip().lower()
    if tgt is not None and (tgt not in SPORTS_MCQ_OPTIONS or tgt == sport):
        raise ValueError(f"{where} (athlete {r['athlete']!r}): inject_sport_without_golf (the edit target) must be "
                         f"one of {[s for s in SPORTS_MCQ_OPTIONS if s != sport]} (an option of the sports "
                         f"multiple-choice question other than the athlete's sport {sport!r}), "
                         f"found {r['inject_sport_without_golf']!r}; fix the cell or leave it empty")
    return r["athlete"].strip(), r["sport"], tgt


_REWRITE_FIELDS = ("prompt", "subject", "relation_id", "target_true", "target_new")


def _field(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d or d[key] is None:
        raise ValueError(f"{where} has no {key!r} field (found {sorted(d)[:12]}); CounterFact records need "
                         f"'case_id' and 'requested_rewrite' with {list(_REWRITE_FIELDS)}")
    return d[key]


def _target(x: Any, key: str, where: str) -> str:
    """A CounterFact target: ``{"str": ...}`` (ROME) or a plain string (built-in layout)."""
    v = x.get("str") if isinstance(x, dict) else x
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{where}: {key} must be a non-empty string or {{'str': ...}}, got {x!r}")
    return v.strip()


def _cf_record(d: dict[str, Any], mcq: dict[str, Any] | None, where: str = "record") -> FactRecord:
    where = f"{where} (case_id {d.get('case_id', '?')})"
    case_id = _field(d, "case_id", where)
    if "requested_rewrite" in d or "prompt" not in d:  # ROME layout
        rw = _field(d, "requested_rewrite", where)
        if not isinstance(rw, dict):
            raise ValueError(f"{where}: requested_rewrite must be an object, got {type(rw).__name__}")
        w = f"{where} requested_rewrite"
    else:  # factlens built-in layout
        rw, w = d, where
        if not mcq and d.get("mcq") is not None:
            mcq = _check_mcq(d["mcq"], f"{where} mcq")
    true = _target(_field(rw, "target_true", w), "target_true", w)
    new = _target(_field(rw, "target_new", w), "target_new", w)
    if new == true:  # an edit to the true answer changes nothing, yet was scored as a successful edit
        raise ValueError(f"{w}: target_new (the edit target) must differ from target_true (the fact's answer), found "
                         f"{new!r} for both; fix the record's target_new or leave the record out")
    template, subject, rel = (str(_field(rw, k, w)) for k in ("prompt", "subject", "relation_id"))
    paras = string_list(_listed(d, "paraphrase_prompts"), "paraphrase_prompts", where)
    neigh = _neighbors(_listed(d, "neighborhood_prompts"), true, where)
    try:
        mc = _cf_mcq(mcq, true, new) if mcq is not None else None
        return FactRecord(subject=subject, template=template, answer=true, target_new=new, relation=rel,
                          id=str(case_id), paraphrases=paras, neighborhood=neigh, mcq=mc)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


def _listed(d: dict[str, Any], key: str) -> Any:
    """``d[key]``, with a missing or null value (parquet's NaN for a missing list) as no items."""
    value = d.get(key)
    return () if value is None else value


def _neighbors(value: Any, true: str, where: str) -> tuple[Neighbor, ...]:
    """CounterFact ``neighborhood_prompts``: a list of prompts (answer: the fact's own) or of
    ``{"prompt": ..., "answer": ...}`` objects (a string where the list belongs became one
    neighbor per character)."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: neighborhood_prompts must be a list of prompts, got a {type(value).__name__} "
                         f"{str(value)[:60]!r}; write it as [\"...\", ...] (a list even for one prompt)")
    out = []
    for p in value:
        if isinstance(p, str):
            out.append(Neighbor(p, true))
        elif isinstance(p, dict) and isinstance(p.get("prompt"), str) and isinstance(p.get("answer"), str):
            out.append(Neighbor(p["prompt"], p["answer"]))
        else:
            raise ValueError(f"{where}: neighborhood_prompts must hold prompt strings or {{'prompt': ..., "
                             f"'answer': ...}} objects with string values, found {str(p)[:60]!r}")
    return tuple(out)


def _check_mcq(m: Any, where: str) -> dict[str, Any]:
    """``m`` when it is a usable multiple-choice row: a ``question`` string and either ``options`` or
    ``target_true`` and ``targets_false`` (a missing one crashed with a bare ``KeyError``), else a
    ``ValueError`` naming ``where`` (file, row and ``prompt_id``)."""
    if not isinstance(m, dict):
        raise ValueError(f"{where} is a {type(m).__name__}, not an object with named fields")
    if not isinstance(m.get("question"), str):
        raise ValueError(f"{where} has no 'question' string (found {m.get('question')!r} among fields "
                         f"{sorted(m)[:12]}); each multiple-choice row needs 'question', 'target_true', "
                         "'targets_false' and 'prompt_id'")
    if "options" in m:
        string_list(m["options"], "options", where)
        return m
    if not isinstance(m.get("target_true"), str) or not m["target_true"].strip():
        raise ValueError(f"{where}: target_true (the correct option) must be a non-empty string, found "
                         f"{m.get('target_true')!r}")
    if m.get("targets_false") is None:
        raise ValueError(f"{where} has no 'targets_false' (the list of wrong options; fields {sorted(m)[:12]})")
    string_list(m["targets_false"], "targets_false", where)
    return m


def _cf_mcq(mcq: dict[str, Any], true: str, new: str) -> MultipleChoice | None:
    """The fact's question from a checked multiple-choice row, or ``None`` when its correct option is
    not the fact's answer."""
    if "options" in mcq:
        opts = tuple(o.strip() for o in mcq["options"])
    else:
        opts = (mcq["target_true"].strip(),) + tuple(o.strip() for o in mcq["targets_false"])
    opts = _own_spelling(tuple(dict.fromkeys(opts)), (true, new))
    # a question whose own correct option is another answer would score the fact's answer as its key
    own_key = "options" in mcq or _own_spelling((str(mcq["target_true"]).strip(),), (true,)) == (true,)
    if true in opts and own_key:
        return MultipleChoice(mcq["question"], opts, opts.index(true), opts.index(new) if new in opts else None)
    return None


def _own_spelling(options: tuple[str, ...], answers: tuple[str, ...]) -> tuple[str, ...]:
    """``options`` with each one that equals an answer up to case and spacing spelled as the answer.

    The multiple-choice file and CounterFact spell some answers differently ("Baseball" and
    "baseball", case 1375 of the sample): matched exactly, such a fact lost its question.
    """
    def key(x: str) -> str:
        return " ".join(x.split()).casefold()

    own = {key(a): a for a in answers}
    return tuple(dict.fromkeys(own.get(key(o), o) for o in options))


def _mcq_table(mcq_path: str | Path, split: str) -> dict[str, dict]:
    """Multiple-choice rows by ``prompt_id``; an identical repeat is dropped with a warning, a different one raises."""
    mcqs: dict[str, dict] = {}
    repeated: list[str] = []
    for i, m in enumerate(_rows_from(mcq_path, split=split)):
        if m.get("prompt_id") is None:
            raise ValueError(f"{mcq_path}: multiple-choice record {i} has no 'prompt_id' (the CounterFact case_id it "
                             f"belongs to); found fields {sorted(m)[:12]}")
        pid = str(m["prompt_id"])
        _check_mcq(m, f"{mcq_path}: multiple-choice record {i} (prompt_id {pid})")
        if pid in mcqs:
            if mcqs[pid] != m:
                raise ValueError(f"{mcq_path}: prompt_id {pid} is used by two different multiple-choice records (record "
                                 f"{i} and an earlier one); each fact needs one question: keep one of them")
            repeated.append(pid)
        mcqs[pid] = m
    if repeated:
        warnings.warn(f"{mcq_path}: left out {len(repeated)} repeated multiple-choice record(s) with prompt_ids "
                      f"{repeated[:10]}", UserWarning, stacklevel=3)
    return mcqs


def _unique_cases(rows: list[dict[str, Any]], src: str) -> list[dict[str, Any]]:
    """Rows with distinct ``case_id`` (a repeated identical row is dropped with a warning)."""
    by_id: dict[str, dict[str, Any]] = {}
    repeated: list[str] = []
    for i, d in enumerate(rows):
        cid = str(_field(d, "case_id", f"{src}: record {i}"))
        if cid in by_id:
            if by_id[cid] != d:
                raise ValueError(f"{src}: case_id {cid} is used by two different records (record {i} and an earlier "
                                 "one); case_ids must be unique")
            repeated.append(cid)
            continue
        by_id[cid] = d
    if repeated:
        warnings.warn(f"{src}: left out {len(repeated)} repeated record(s) with case_ids {repeated[:10]}", UserWarning,
                      stacklevel=3)
    return list(by_id.values())


def counterfact(path: str | Path | None = None, mcq_path: str | Path | None = None, *, split: str = "train") -> FactDataset:
    """CounterFact facts with edit targets, paraphrases, neighborhoods and multiple choice.

    Args:
        path: ``None`` for the built-in set; else CounterFact in the ROME JSON layout (local
            file or Hugging Face dataset name): a list of records, or an object holding one
            under ``"data"`` or ``"records"``. A file without records raises ``ValueError``
            naming what it found; so does a record without a needed field or whose
            ``target_new`` is its ``target_true``, or two different records with the same
            ``case_id`` (an identical repeat is dropped with a warning).
        mcq_path: Multiple-choice questions (JSONL or parquet with ``question``,
            ``target_true``, ``targets_false``, ``prompt_id``), joined on ``case_id``.
            Options are matched to the fact's answers up to case and spacing (and spelled
            as the fact spells them). Raises when no ``prompt_id`` matches a ``case_id`` or
            one ``prompt_id`` has two different questions; warns when some facts get no
            question (no row, or the true answer is not among the options), naming them.

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
    rows = _unique_cases(rows, src)
    mcqs = _mcq_table(mcq_path, split) if mcq_path is not None else {}
    recs = [_cf_record(d, mcqs.get(str(d["case_id"])), f"{src}: record {i}") for i, d in enumerate(rows)]
    if mcq_path is not None:
        matched = sum(str(d["case_id"]) in mcqs for d in rows)
        if matched == 0:
            raise ValueError(f"{mcq_path}: no multiple-choice prompt_id matches a case_id of {src} (prompt_ids e.g. "
                             f"{list(mcqs)[:5]}, case_ids e.g. {[str(d['case_id']) for d in rows[:5]]}); pass the "
                             "questions of these facts")
        unmatched = [r.id for r in recs if r.id not in mcqs]
        wrong = [r.id for r in recs if r.id in mcqs and r.mcq is None]
        if unmatched or wrong:
            why = [f"{len(unmatched)} without a matching prompt_id" if unmatched else "",
                   f"{len(wrong)} whose true answer is not its question's correct option (case_ids {wrong[:10]})"
                   if wrong else ""]
            warnings.warn(f"{mcq_path}: {len(unmatched) + len(wrong)} of {len(rows)} facts have no multiple-choice "
                          f"question ({'; '.join(w for w in why if w)}); their MCQ metrics leave them out",
                          UserWarning, stacklevel=2)
    return FactDataset(tuple(recs), name="counterfact", candidates=(), meta={"source": src, "mcq": str(mcq_path)})


def from_records(records: Iterable[FactRecord], name: str = "facts", candidates: Iterable[str] = ()) -> FactDataset:
    """A dataset from your own records."""
    return FactDataset(tuple(records), name=name, candidates=candidates)  # FactDataset refuses a bare string
