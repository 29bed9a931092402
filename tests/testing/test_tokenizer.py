"""The word-level tokenizer of the test models (factlens.testing.tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

from factlens.testing import word_tokenizer
from factlens.testing.tiny import builtin_words


BUILTIN = Path(__file__).resolve().parents[2] / "factlens" / "data" / "builtin"
FEW_SHOT = "Fact: Tiger Woods plays the sport of golf\nFact: LeBron James plays the sport of"


def test_word_tokenizer_round_trip_and_offsets():
    tok = word_tokenizer(["Fact: Tiger Woods plays the sport of golf", "LeBron James"])
    enc = tok(FEW_SHOT, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    pieces = tok.convert_ids_to_tokens(ids)
    assert "\n" in pieces
    for piece, (a, b) in zip(pieces[1:], offsets[1:]):
        assert FEW_SHOT[a:b] == piece
    assert tok(" golf", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("golf")]
    assert tok.decode(ids, skip_special_tokens=True).split(" ") == pieces[1:]
    assert word_tokenizer(["b a", "c"]).get_vocab() == word_tokenizer(["c", "a b"]).get_vocab()
    assert tok("Zebra", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]


def test_builtin_prompts_have_no_unk():
    tok = word_tokenizer(builtin_words())
    rows = json.loads((BUILTIN / "sports.json").read_text())
    texts = [FEW_SHOT]
    for r in rows:
        texts += [f"Fact: Tiger Woods plays the sport of golf\nFact: {r['athlete']} plays the sport of",
                  f" {r['sport']}"]
    for case in json.loads((BUILTIN / "counterfact.json").read_text()):
        texts += [case["prompt"].format(case["subject"]), " " + case["target_true"], " " + case["target_new"]]
        texts += case["paraphrase_prompts"] + [n["prompt"] for n in case["neighborhood_prompts"]]
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    bad = [t for t, ids in zip(texts, enc) if tok.unk_token_id in ids]
    assert not bad, bad[:5]
    for sport in {r["sport"] for r in rows} | {"golf"}:
        assert len(tok(" " + sport, add_special_tokens=False)["input_ids"]) == 1
