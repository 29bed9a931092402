"""BaselineStore: the unedited model's numbers shared between processes, bit for bit."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from factlens.evaluation import BaselineCache, BaselineStore, EvalConfig, evaluate
from factlens.evaluation.baseline_store import decode_value, encode_value, key_text
from factlens.testing import planted_fact_model

pytestmark = pytest.mark.usefixtures("one_thread")

#: Every suite that keeps numbers of the unedited model in a BaselineCache (CPU-only ones).
CACHED_SUITES = ("standard", "formats", "side_effects", "relearning", "probes", "soft_prompts", "direction_ablation",
                 "unrelated_finetune")
CFG = EvalConfig(text={"n_chunks": 2, "seq_len": 16}, relearning={"steps": 2, "rank": 4},
                 soft_prompts={"steps": 2, "seeds": 1}, unrelated_finetune={"steps": 2})


def _same(a, b) -> bool:
    """Equal in type and value, arrays and floats bit for bit (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, torch.Tensor):
        return (a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
                and a.detach().cpu().contiguous().numpy().tobytes() == b.detach().cpu().contiguous().numpy().tobytes())
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "__dataclass_fields__"):
        return all(_same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b


def _roundtrip(value):
    tree, tensors = encode_value(value)
    tree = json.loads(json.dumps(tree))  # what the store writes and reads
    return decode_value(tree, {k: v.clone() for k, v in tensors.items()})


def test_values_come_back_bit_for_bit():
    from factlens.evaluation.attacks import TaskScores

    scores = TaskScores(forget={"a": 0.5, "b": float("nan")}, edit={}, maintain={"c": 1.0},
                        chance={"forget": 0.25}, n_prompts={"forget": 2})
    value = {
        "floats": [0.1, 1 / 3, float("inf"), -float("inf"), float("nan"), -0.0, 5e-324],
        "tuple": (1, "x", None, True, (2.5,)),
        "bytes": b"\x00\xff",
        ("tuple", "key", 3): np.array([[1.0, np.nan], [np.inf, 1e-300]]),
        "arrays": [np.arange(5, dtype=np.int64), np.array([True, False]), np.zeros((0, 3), dtype=np.float32),
                   np.array(2.5), np.arange(6.0)[::2]],
        "scalars": [np.float64(0.1), np.int64(7), np.bool_(True), np.float32(1.5)],
        "tensor": torch.tensor([[1.5, float("nan")]], dtype=torch.float32),
        "mask": torch.tensor([True, False]),
        "dataclass": scores,
    }
    back = _roundtrip(value)
    assert _same(value, back)
    assert type(back["dataclass"]) is TaskScores and back["tuple"][4] == (2.5,)


def test_prompt_scores_with_nested_records_come_back():
    from factlens.data.formats import format_prompts
    from factlens.evaluation import standard

    p = planted_fact_model()
    items = format_prompts(p.task.forget, "default", seed=0)
    scores = standard.score_items(p.model, items, CFG)
    assert _same(scores, _roundtrip(scores))


@dataclass
class _Foreign:
    x: int = 1


@pytest.mark.parametrize("value, what", [
    (object(), "without pickling"),
    (np.array([object()]), "Python objects"),
    (_Foreign(), "not a factlens dataclass"),
    ({1, 2}, "without pickling"),
])
def test_values_that_would_need_pickle_are_refused(value, what):
    with pytest.raises(TypeError, match=what):
        encode_value(value)


def test_keys_need_a_reliable_text():
    assert key_text(("a", 1, 2.5, None, (True,), b"\x01")) == "('a',1,2.5,None,(True,),b'\\x01',)"
    assert key_text((1,)) != key_text(("1",)) and key_text(1.0) != key_text(1)
    with pytest.raises(TypeError, match="ndarray"):
        key_text(("x", np.arange(3)))


def test_a_store_refuses_a_dataclass_outside_factlens():
    tree = {"$dataclass": "os:PathLike", "fields": {}}
    with pytest.raises(ValueError, match="not a factlens class"):
        decode_value(tree, {})


def _edited(p):
    edited = copy.deepcopy(p.model)
    with torch.no_grad():
        edited.blocks[1].mlp.W_out.mul_(0.5)
    return edited


def test_a_second_cache_reads_every_entry_and_gets_the_same_numbers(tmp_path: Path):
    p = planted_fact_model()
    edited = _edited(p)
    plain = evaluate(edited, p.task, original=p.model, suites=CACHED_SUITES, config=CFG, show_progress=False)
    store = BaselineStore(tmp_path)
    first = BaselineCache(store=store)
    a = evaluate(edited, p.task, original=p.model, suites=CACHED_SUITES, config=CFG, baselines=first,
                 show_progress=False)
    assert store.skipped == 0 and store.writes == first.misses > 0  # every value was shareable
    second = BaselineCache(store=BaselineStore(tmp_path))
    b = evaluate(edited, p.task, original=p.model, suites=CACHED_SUITES, config=CFG, baselines=second,
                 show_progress=False)
    assert second.misses == 0 and second.store_hits == first.misses
    for res in (a, b):
        x, y = plain.to_frame(), res.to_frame()
        assert x[["suite", "name", "n"]].equals(y[["suite", "name", "n"]])
        for col in ("value", "baseline", "ci_low", "ci_high"):
            np.testing.assert_array_equal(x[col].astype(float), y[col].astype(float), err_msg=col)


def test_another_model_never_reads_the_entries(tmp_path: Path):
    p = planted_fact_model()
    edited = _edited(p)
    first = BaselineCache(store=BaselineStore(tmp_path))
    evaluate(edited, p.task, original=p.model, suites=("standard",), config=CFG, baselines=first, show_progress=False)
    other = copy.deepcopy(p.model)
    with torch.no_grad():
        other.blocks[0].mlp.b_out.add_(1.0)
    second = BaselineCache(store=BaselineStore(tmp_path))
    evaluate(edited, p.task, original=other, suites=("standard",), config=CFG, baselines=second, show_progress=False)
    assert second.store_hits == 0 and second.misses == first.misses
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 2  # one folder per original model


def test_model_digest_covers_moved_values_and_the_architecture_config():
    """The store's folder of an original: equal weights with another config (attention window) or
    with two values swapped (same sums) are other models. Both used to share the folder."""
    from factlens.evaluation.baseline_cache import _fingerprint
    from factlens.testing.shaped import gemma3_shaped

    a, b = gemma3_shaped(window_size=4), gemma3_shaped(window_size=8)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))  # the same weights
    digest = BaselineStore.model_digest
    assert digest(_fingerprint(a), a) != digest(_fingerprint(b), b)
    c = copy.deepcopy(a)
    assert digest(_fingerprint(c), c) == digest(_fingerprint(a), a)
    with torch.no_grad():
        c.blocks[0].mlp.W_out[[0, 1]] = c.blocks[0].mlp.W_out[[1, 0]]
    assert digest(_fingerprint(c), c) != digest(_fingerprint(a), a)


def test_a_damaged_entry_is_computed_again(tmp_path: Path):
    p = planted_fact_model()
    edited = _edited(p)
    first = BaselineCache(store=BaselineStore(tmp_path))
    ref = evaluate(edited, p.task, original=p.model, suites=("standard",), config=CFG, baselines=first,
                   show_progress=False)
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert files
    files[0].write_bytes(b"not safetensors")
    store = BaselineStore(tmp_path)
    second = BaselineCache(store=store)
    res = evaluate(edited, p.task, original=p.model, suites=("standard",), config=CFG, baselines=second,
                   show_progress=False)
    assert store.unreadable == 1 and second.misses == 1 and second.store_hits == first.misses - 1
    np.testing.assert_array_equal(ref.to_frame()["baseline"].astype(float), res.to_frame()["baseline"].astype(float))


def test_another_process_reads_what_this_one_computed(tmp_path: Path):
    """Two processes, one folder: the second computes nothing on the unedited model."""
    code = textwrap.dedent(f"""
        import copy, json, torch
        torch.set_num_threads(1)
        from factlens.evaluation import BaselineCache, BaselineStore, EvalConfig, evaluate
        from factlens.testing import planted_fact_model
        p = planted_fact_model()
        edited = copy.deepcopy(p.model)
        with torch.no_grad():
            edited.blocks[1].mlp.W_out.mul_(0.5)
        cfg = EvalConfig(text={{"n_chunks": 2, "seq_len": 16}}, soft_prompts={{"steps": 2, "seeds": 1}})
        cache = BaselineCache(store=BaselineStore({str(tmp_path)!r}))
        res = evaluate(edited, p.task, original=p.model, suites=("standard", "soft_prompts"), config=cfg,
                       baselines=cache, show_progress=False)
        print(json.dumps({{"misses": cache.misses, "baseline": [float(x) for x in res.to_frame()["baseline"]]}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    p = planted_fact_model()
    cfg = EvalConfig(text={"n_chunks": 2, "seq_len": 16}, soft_prompts={"steps": 2, "seeds": 1})
    cache = BaselineCache(store=BaselineStore(tmp_path))
    res = evaluate(_edited(p), p.task, original=p.model, suites=("standard", "soft_prompts"), config=cfg,
                   baselines=cache, show_progress=False)
    assert theirs["misses"] > 0 and cache.misses == 0 and cache.store_hits == theirs["misses"]
    np.testing.assert_array_equal(np.array(theirs["baseline"], dtype=float),
                                  res.to_frame()["baseline"].astype(float).to_numpy())


def test_clear_makes_a_cache_without_recheck_read_the_store_under_the_new_weights(tmp_path):
    """recheck=False: the caller calls clear() when the original changes (as documented); clear() kept the
    old weights' store key, so the old model's baselines came back from the shared store."""
    p = planted_fact_model()
    original, edited = copy.deepcopy(p.model), copy.deepcopy(p.model)
    with torch.no_grad():
        edited.blocks[1].mlp.W_out.mul_(0.5)
    cache = BaselineCache(store=BaselineStore(tmp_path / "store"), recheck=False)
    evaluate(edited, p.task, original=original, suites=["standard"], baselines=cache)
    with torch.no_grad():
        original.blocks[1].mlp.W_out.zero_()
    cache.clear()
    after = evaluate(edited, p.task, original=original, suites=["standard"], baselines=cache).to_frame()
    truth = evaluate(edited, p.task, original=original, suites=["standard"]).to_frame()
    assert after["baseline"].tolist() == truth["baseline"].tolist()


def test_a_big_endian_array_comes_back_with_its_values_and_dtype(tmp_path: Path):
    """Audit (t7_store_values.py): torch.from_numpy refuses a non-native byte order, and the ValueError
    stopped the evaluation; the array is stored in native order and given back as it was put."""
    value = {"scores": np.array([1.5, -0.0, np.nan, 3e300], dtype=">f8"), "zero_d": np.array(7, dtype=">i4")}
    store = BaselineStore(tmp_path)
    assert store.put("m", ("big",), value) is True and store.skipped == 0
    found, back = BaselineStore(tmp_path).get("m", ("big",))
    assert found and _same(back, value)
    assert back["scores"].dtype == np.dtype(">f8") and back["zero_d"].shape == ()
    assert _same(_roundtrip(np.arange(3.0)), np.arange(3.0))  # native arrays as before


def test_an_array_safetensors_cannot_write_is_skipped_not_raised(tmp_path: Path):
    """Audit (t7_store_values.py): put promises False for an unencodable value, but safetensors' KeyError
    on a complex128 array stopped the evaluation; the value is skipped and nothing is written."""
    store = BaselineStore(tmp_path)
    for i, value in enumerate((np.array([1 + 2j]), {"a": torch.zeros(2, dtype=torch.complex128)})):
        assert store.put("m", ("complex", i), value) is False
        assert store.get("m", ("complex", i)) == (False, None)
    assert store.skipped == 2 and store.writes == 0 and not list(tmp_path.rglob("*.*"))
    assert store.put("m", ("fine",), np.arange(3)) is True  # the store still works
