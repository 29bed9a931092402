"""Checks of the data loaders' input (audit s45, data items 3-8): line numbers of bad CSV records,
MMLU's answer-letter and header-row messages, byte-order marks, mistyped local paths, the Sports
Facts edit-target column, negative shot counts, and valid data loading exactly as before."""

from __future__ import annotations

import csv
import hashlib
import warnings

import pytest

from factlens.data import counterfact, sports_facts
from factlens.data.formats import format_prompts
from factlens.data.mmlu import load_mmlu, mmlu_accuracy
from factlens.data.text import load_texts

pytestmark = pytest.mark.usefixtures("one_thread")

_HEADER = ["Unnamed: 0", "athlete", "sport", "prompt", "inject_sport_without_golf"]


def _sports_csv(path, rows, *, encoding="utf-8", header=_HEADER):
    """A Sports Facts CSV in the real layout: the prompt column spans two lines, as in the paper's file."""
    with path.open("w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _row(i, sport="football", target="baseball"):
    return [str(100 + i), f"Player {i}", sport,
            f"Fact: Tiger Woods plays the sport of golf\nFact: Player {i} plays the sport of", target]


def _mmlu_csv(path, rows, *, encoding="utf-8"):
    with path.open("w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows(rows)
    return path


def _question(i, answer="B"):
    return [f"Question {i}?\nSecond line of question {i}.", "a", "b", "c", "d", answer]


# --- item 3: physical line numbers ---------------------------------------------------------------


def test_a_bad_sports_csv_record_names_its_physical_lines(tmp_path):
    """Records span two lines (quoted newline in the prompt): the error said 'line 7' for the record
    on lines 12-13."""
    rows = [_row(i) for i in range(6)]
    rows[5] = rows[5] + ["EXTRA"]
    p = _sports_csv(tmp_path / "sports.csv", rows)
    line = next(n for n, text in enumerate(p.read_text().splitlines(), 1) if "EXTRA" in text)
    assert line == 13
    with pytest.raises(ValueError, match=r"sports.csv, lines 12-13: more fields than the 5 header columns"):
        sports_facts(p)


def test_a_short_sports_csv_record_after_multiline_ones_names_its_line(tmp_path):
    p = _sports_csv(tmp_path / "sports.csv", [_row(0), _row(1), ["102", "Player 2"]])
    with pytest.raises(ValueError, match=r"sports.csv, line 6: too few fields \(missing \['sport'"):
        sports_facts(p)


def test_a_bad_mmlu_row_names_the_line_it_ends_on(tmp_path):
    """Questions span two lines: the error named the record number (4), not the line (8)."""
    rows = [_question(i) for i in range(5)]
    rows[3] = rows[3][:5]
    p = _mmlu_csv(tmp_path / "x_dev.csv", rows)
    with pytest.raises(ValueError, match=r"x_dev.csv:8: expected 6 columns .* got 5 columns"):
        load_mmlu(p)


# --- item 4: MMLU answer letter and header row ---------------------------------------------------


def test_a_lowercase_mmlu_answer_letter_is_named_as_such(tmp_path):
    rows = [_question(i) for i in range(5)]
    rows[3][5] = "b"
    p = _mmlu_csv(tmp_path / "x_dev.csv", rows)
    with pytest.raises(ValueError, match=r"x_dev.csv:8: the answer letter \(6th column\) must be one of A, B, C, D, "
                                         r"got 'b' \(upper case"):
        load_mmlu(p)
    rows[3][5] = "E"
    with pytest.raises(ValueError, match=r"must be one of A, B, C, D, got 'E'$"):
        load_mmlu(_mmlu_csv(tmp_path / "x_dev.csv", rows))


def test_an_mmlu_header_row_is_named_as_such(tmp_path):
    p = _mmlu_csv(tmp_path / "h_dev.csv", [["question", "A", "B", "C", "D", "answer"]] + [_question(0)])
    with pytest.raises(ValueError, match=r"h_dev.csv:1: .* looks like a header row, but MMLU CSVs have none"):
        load_mmlu(p)


# --- item 5: byte-order marks --------------------------------------------------------------------


def test_a_byte_order_mark_does_not_change_sports_ids(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: the first column became '\\ufeffUnnamed: 0', so the ids
    silently became row positions."""
    rows = [_row(i) for i in range(4)]
    plain = sports_facts(_sports_csv(tmp_path / "plain.csv", rows))
    bom = sports_facts(_sports_csv(tmp_path / "bom.csv", rows, encoding="utf-8-sig"))
    assert [r.id for r in bom] == [r.id for r in plain] == [f"sports:{100 + i}" for i in range(4)]
    assert [r.prompt for r in bom] == [r.prompt for r in plain]


def test_a_byte_order_mark_before_the_athlete_column(tmp_path):
    """'athlete' first: the loader reported the column missing."""
    p = tmp_path / "s.csv"
    p.write_text("athlete,sport\nA One,football\nB Two,baseball\n", encoding="utf-8-sig")
    assert [(r.subject, r.answer) for r in sports_facts(p)] == [("A One", "football"), ("B Two", "baseball")]


def test_a_byte_order_mark_is_not_part_of_the_first_mmlu_question(tmp_path):
    p = _mmlu_csv(tmp_path / "bom_dev.csv", [["Plain question?", "a", "b", "c", "d", "A"], _question(1)],
                  encoding="utf-8-sig")
    assert [q.question for q in load_mmlu(p)] == ["Plain question?", _question(1)[0]]


def test_a_byte_order_mark_is_not_part_of_the_first_passage(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("First passage.\nSecond passage.\n", encoding="utf-8-sig")
    assert load_texts(p) == ["First passage.", "Second passage."]


def test_a_byte_order_mark_before_json_counterfact(tmp_path):
    import json

    rec = {"case_id": 1, "requested_rewrite": {"prompt": "The capital of {} is", "subject": "France",
                                               "relation_id": "P36", "target_true": {"str": "Paris"},
                                               "target_new": {"str": "Rome"}}}
    p = tmp_path / "cf.json"
    p.write_text(json.dumps([rec]), encoding="utf-8-sig")
    assert [(r.id, r.answer) for r in counterfact(p)] == [("1", "Paris")]


# --- item 6: a mistyped local path is not sent to the Hub --------------------------------------------


@pytest.mark.parametrize("load, source", [(sports_facts, "data/sports_facts/sports.csv"),
                                          (counterfact, "data/cf/counterfact.json"),
                                          (sports_facts, "sports_facts/sports.csv")])
def test_a_missing_local_data_path_is_not_sent_to_the_hub(tmp_path, monkeypatch, load, source):
    import datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail(f"{source!r} was sent to the Hub"))
    with pytest.raises(FileNotFoundError, match=rf"{source} does not exist \(a local path: check it"):
        load(source)


def test_a_dataset_name_still_goes_to_the_hub(monkeypatch):
    import datasets

    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: asked.append((name, split)) or [])
    with pytest.raises(ValueError, match="expected columns 'athlete' and 'sport'"):
        sports_facts("owner/sports")
    assert asked == [("owner/sports", "train")]


# --- item 7: the Sports Facts edit target and golf ----------------------------------------------------


def test_sports_edit_targets_are_lower_cased(tmp_path):
    """'Basketball' became a scoring candidate of its own and lost its multiple-choice index."""
    p = _sports_csv(tmp_path / "s.csv", [_row(0, "football", " Basketball "), _row(1, "baseball", "FOOTBALL"),
                                         _row(2, "basketball", ""), _row(3, "football", "Golf")])
    ds = sports_facts(p)
    assert [r.target_new for r in ds] == ["basketball", "football", None, "golf"]
    assert [r.mcq.target_index for r in ds] == [0, 2, None, 3]
    assert all(set(it.candidates) == {"basketball", "baseball", "football"} for it in format_prompts(ds[:3]))


@pytest.mark.parametrize("sport, target", [("football", "hockey"), ("football", "Football"),
                                           ("baseball", " baseball")])
def test_a_bad_sports_edit_target_names_the_record(tmp_path, sport, target):
    p = _sports_csv(tmp_path / "s.csv", [_row(0), _row(1, sport, target)])
    with pytest.raises(ValueError, match=rf"s.csv: record 1 \(athlete 'Player 1'\): inject_sport_without_golf "
                                         rf"\(the edit target\) must be one of .*found '{target}'; fix the cell"):
        sports_facts(p)


def test_a_golfer_row_is_refused_as_the_message_says(tmp_path):
    """A 'golf' athlete was accepted although the error listed three sports; golf is never a candidate."""
    p = tmp_path / "s.csv"
    p.write_text("athlete,sport\nA One,football\nB Two,golf\n")
    with pytest.raises(ValueError, match=r"record 1: unknown sport 'golf' for 'B Two'; expected one of "
                                         r"\('basketball', 'baseball', 'football'\)"):
        sports_facts(p)


# --- item 8: shot counts, n larger than the source, invalid UTF-8 text -----------------------------


def test_negative_shot_counts_are_refused():
    from factlens.data.mmlu import MMLUQuestion
    from factlens.testing import tiny_model

    with pytest.raises(ValueError, match="n_shots must be >= 0 .* got -1"):
        format_prompts(sports_facts()[:2], "mcq", n_shots=-1)
    q = MMLUQuestion("sports", "Which sport?", ("golf", "football", "baseball", "basketball"), 0)
    with pytest.raises(ValueError, match="n_shots must be >= 0 .* got -1"):
        mmlu_accuracy(tiny_model(), [q, q], n_shots=-1)


def test_load_mmlu_warns_when_n_exceeds_the_questions(tmp_path):
    p = _mmlu_csv(tmp_path / "x_dev.csv", [_question(i) for i in range(3)])
    with pytest.warns(UserWarning, match=r"asked for n=10 questions but .* holds only 3; using all 3"):
        assert len(load_mmlu(p, n=10)) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_mmlu(p, n=3)) == 3


def test_invalid_utf8_text_is_refused_like_the_other_loaders(tmp_path):
    """Bad bytes were replaced by U+FFFD silently (every other loader raises 'not UTF-8')."""
    p = tmp_path / "latin1.txt"
    p.write_bytes("Café au lait, line one.\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: not UTF-8 text .* save the file as UTF-8"):
        load_texts(p)


# --- valid data loads exactly as before ----------------------------------------------------------


def _digest(items) -> str:
    return hashlib.sha256(repr(list(items)).encode()).hexdigest()[:16]


def _facts(ds):
    return ((r.id, r.subject, r.template, r.answer, r.target_new,
             r.mcq and (r.mcq.question, r.mcq.options, r.mcq.answer_index, r.mcq.target_index)) for r in ds)


def _questions(qs):
    return ((q.subject, q.question, q.choices, q.answer_index) for q in qs)


def test_builtin_data_loads_as_before():
    """Digests taken with the loaders before these checks were added."""
    assert (len(sports_facts()), _digest(_facts(sports_facts()))) == (385, "334b53ffca0eaec6")
    assert (len(load_texts(None)), _digest(load_texts(None))) == (80, "632dc25d80635cb5")
    assert (len(load_texts(None, held_out=True)), _digest(load_texts(None, held_out=True))) == (48, "720eef1b886bb078")


def test_reference_data_loads_as_before(shared_data):
    """Digests taken with the loaders before these checks were added."""
    sports = sports_facts(shared_data / "sports_facts" / "sports.csv")
    assert (len(sports), _digest(_facts(sports))) == (1559, "22f6e16441506008")
    with warnings.catch_warnings():  # the sample's one fact without a usable question is warned about
        warnings.simplefilter("ignore")
        cf = counterfact(shared_data / "counterfact" / "counterfact_sample.json",
                         shared_data / "counterfact" / "counterfact_sample_mcq.jsonl")
    assert (len(cf), _digest(_facts(cf))) == (300, "e2c2223f94cf7ffc")
    qs = load_mmlu(shared_data / "mmlu" / "dev")
    assert (len(qs), _digest(_questions(qs))) == (285, "18440e35bc49f380")
    wiki = load_texts(shared_data / "wikitext2" / "test.txt")
    # 2026-12-06: WikiText's "<unk>" placeholders are dropped (was "1f2c0990ec7531dc", 2,185 passages; the 33
    # passages of placeholders only are gone, and every passage without one is as it was)
    assert (len(wiki), _digest(wiki)) == (2152, "5616180f5480e802")


@pytest.mark.parametrize("layout", ["rome", "builtin"])
def test_a_counterfact_edit_target_equal_to_the_true_answer_is_refused(tmp_path, layout):
    """A record whose target_new is its target_true was loaded, and its "edit" to the true answer counted
    as a success (the shared CounterFact sample has none: it loads whole, test_reference_data_loads_as_before)."""
    import json

    fact = {"prompt": "The capital of {} is", "subject": "France", "relation_id": "P36", "target_true": "Paris"}
    good = {"case_id": 1, "requested_rewrite": {**fact, "target_new": "Rome"}}
    bad = ({"case_id": 2, "requested_rewrite": {**fact, "target_new": {"str": " Paris"}}} if layout == "rome"
           else {"case_id": 2, **fact, "target_new": "Paris"})
    p = tmp_path / "cf.json"
    p.write_text(json.dumps([good, bad]))
    with pytest.raises(ValueError, match=r"cf.json: record 1 \(case_id 2\).*: target_new \(the edit target\) must "
                                         r"differ from target_true .* found 'Paris' for both"):
        counterfact(p)
    p.write_text(json.dumps([good]))
    assert [(r.answer, r.target_new) for r in counterfact(p)] == [("Paris", "Rome")]
