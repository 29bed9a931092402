"""EditResult with bad saved deltas (issue 11, item 10): validate before writing, all-or-nothing
apply, and a warning when the target model has the same shapes but other weights."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch

from factlens.components import Component, Mask, ModelShape
from factlens.editing import EditConfig
from factlens.editing.result import EditResult, ParamDelta
from factlens.testing import planted_fact_model
from factlens.testing.invariants import assert_unchanged, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    return planted_fact_model(n_subjects=6).model


def _edit(model, mask: Mask) -> EditResult:
    """A small real delta on every parameter the mask selects (made in place on ``model``)."""
    deltas = {}
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, m in sorted(mask.to_param_masks(model).items()):
            p = params[name]
            old = p[m].detach().clone()
            new = old + 0.1 * torch.randn(old.shape, generator=gen)
            p[m] = new
            deltas[name] = ParamDelta(m.clone(), old, new.clone())
    return EditResult(model=model, mask=mask, config=EditConfig.fast(), objective="inject", history=(), seconds=0.0,
                      sft_kind="none", n_params_trained=sum(int(d.mask.sum()) for d in deltas.values()),
                      deltas=deltas, shape=ModelShape.of(model), model_name="planted")


MASK = Mask([Component("mlp", 1), Component("mlp", 2), Component("head", 2, 1)])


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, object]:
    """A saved edit and a pristine model of the same weights it was made on."""
    m = _model()
    pristine = copy.deepcopy(m)
    res = _edit(m, MASK)
    path = tmp_path / "edit.safetensors"
    res.save(path)
    return path, pristine


def _tamper(path: Path, dst: Path, change) -> Path:
    """Rewrite a saved edit with ``change(tensors)`` applied, keeping its metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_load_checks_every_tensor_against_its_mask(saved, tmp_path: Path):
    path, _ = saved
    names = EditResult.load(path).deltas
    last = sorted(names)[-1]

    def shorten(t):
        t[f"{last}/new"] = t[f"{last}/new"][:-1].contiguous()

    bad = _tamper(path, tmp_path / "short.safetensors", shorten)
    with pytest.raises(ValueError, match=r"short\.safetensors.*" + last.replace(".", r"\.") + ".*mask selects"):
        EditResult.load(bad)

    def nan(t):
        t[f"{last}/new"][0] = float("nan")

    with pytest.raises(ValueError, match="NaN"):
        EditResult.load(_tamper(path, tmp_path / "nan.safetensors", nan))

    def drop(t):
        del t[f"{last}/old"]

    with pytest.raises(ValueError, match="lacks the tensors"):
        EditResult.load(_tamper(path, tmp_path / "drop.safetensors", drop))


def test_load_names_a_truncated_file(saved, tmp_path: Path):
    path, _ = saved
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.safetensors"):
        EditResult.load(cut)


def test_apply_is_all_or_nothing_when_a_delta_does_not_fit(saved):
    """10 of 11 parameters written, then an error, used to leave the model half-edited."""
    path, pristine = saved
    res = EditResult.load(path)
    last = sorted(res.deltas)[-1]
    d = res.deltas[last]
    res.deltas[last] = ParamDelta(d.mask, d.old, d.new[:-1])  # a damaged delta, last in write order
    target = copy.deepcopy(pristine)
    snap = snapshot(target)
    with pytest.raises(ValueError, match="mask selects"):
        res.apply(target)
    assert_unchanged(target, snap)  # nothing written
    assert not res.applied


def test_apply_rolls_back_when_a_write_fails(saved, monkeypatch):
    import factlens.editing.result as result_mod

    path, pristine = saved
    res = EditResult.load(path)
    target = copy.deepcopy(pristine)
    snap = snapshot(target)
    last = sorted(res.deltas)[-1]

    class Broken(torch.Tensor):
        def __setitem__(self, key, value):
            raise RuntimeError("simulated failure while writing")

    real = result_mod._params

    def params_with_broken_last(model):
        out = real(model)
        out[last] = out[last].detach().as_subclass(Broken)
        return out

    monkeypatch.setattr(result_mod, "_params", params_with_broken_last)
    with pytest.raises(RuntimeError, match="simulated"):
        res.apply(target)
    monkeypatch.undo()
    assert_unchanged(target, snap)  # the parameters written before the failure were restored
    assert not res.applied


def test_apply_refuses_a_delta_outside_its_mask(saved):
    path, pristine = saved
    res = EditResult.load(path)
    name = "blocks.0.attn.W_Q"
    p = dict(pristine.named_parameters())[name]
    m = torch.zeros_like(p, dtype=torch.bool)
    m.view(-1)[0] = True
    res.deltas[name] = ParamDelta(m, p[m].detach().clone(), p[m].detach().clone() + 1)
    target = copy.deepcopy(pristine)
    snap = snapshot(target)
    with pytest.raises(ValueError, match="outside the edit's mask"):
        res.apply(target)
    assert_unchanged(target, snap)


def test_fingerprint_warns_on_other_weights_of_the_same_shape(saved):
    path, pristine = saved
    meta = json.loads(__import__("safetensors").safe_open(str(path), framework="pt").metadata()["factlens_edit"])
    assert len(meta["original_fingerprint"]) == 64
    res = EditResult.load(path)
    same = copy.deepcopy(pristine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model it was made on: no warning
        res.apply(same)
    res.revert(same)
    other = planted_fact_model(n_subjects=6, seed=1).model  # same architecture, other weights
    assert ModelShape.of(other) == ModelShape.of(pristine)
    with pytest.warns(UserWarning, match="weights differ"):
        res.apply(other)
    res.revert(other)


def test_fingerprint_covers_unmasked_entries_of_touched_tensors(saved):
    """A model that differs only outside the edited entries (of a touched tensor) still warns."""
    path, pristine = saved
    res = EditResult.load(path)
    name, d = next((n, d) for n, d in sorted(res.deltas.items()) if not bool(d.mask.all()))
    other = copy.deepcopy(pristine)
    with torch.no_grad():
        p = dict(other.named_parameters())[name]
        p[~d.mask] += 1.0
    with pytest.warns(UserWarning, match="weights differ"):
        res.apply(other)


def test_save_replaces_its_own_edit_and_refuses_any_other_file(saved, tmp_path: Path):
    """EditResult.save overwrote any file (a notebook's notes, another tool's safetensors) without a word."""
    from safetensors.torch import save_file

    path, pristine = saved
    res = EditResult.load(path)
    for name, write in (("notes.txt", lambda p: p.write_bytes(b"my precious notes\n")),
                        ("weights.safetensors", lambda p: save_file({"w": torch.ones(2)}, str(p)))):
        foreign = tmp_path / name
        write(foreign)
        before = foreign.read_bytes()
        with pytest.raises(ValueError, match=rf"{name} exists and is not a saved edit factlens wrote; it is left alone"):
            res.save(foreign)
        assert foreign.read_bytes() == before
    other = _edit(copy.deepcopy(pristine), Mask([Component("mlp", 0)]))
    other.save(path)  # a re-run cell replaces the earlier edit
    back = EditResult.load(path)
    assert back.mask == other.mask and set(back.deltas) == set(other.deltas)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
