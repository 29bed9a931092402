"""AlphaEdit (factlens.editing.alphaedit): the reference's update, the null-space guarantee, sequences."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import factlens
from factlens.components import Mask
from factlens.data import sports_facts
from factlens.editing import EditConfig, EditResult, edit_sequential
from factlens.editing import editor as editor_mod
from factlens.editing.alphaedit import AlphaEditConfig, alphaedit, alphaedit_update, null_space_basis
from factlens.editing.covariance import KeyStatistics, collect_keys
from factlens.editing.memit import MemitConfig, memit
from factlens.data.text import load_texts, token_chunks
from factlens.runner.pipeline import _edit_summary
from factlens.tasks import sports_athlete_editing
from factlens.testing import planted_fact_model, tiny_model
from factlens.testing.invariants import assert_unchanged, no_hooks, snapshot
from factlens.tokens import candidate_logprobs

pytestmark = pytest.mark.usefixtures("one_thread", "cache_dir")  # covariances in a temporary cache

FAST = dict(v_num_grad_steps=8, prefix_lengths=((5, 3),), n_cov_tokens=1500)
CANDS = ("basketball", "baseball", "football", "golf")


@pytest.fixture(scope="module")
def task():
    return sports_athlete_editing(sports_facts()[:40], n_forget=3, seed=0, n_retain=8, n_maintain=8)


def _rand(*shape, g):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def test_update_equals_the_reference_solve_and_keeps_earlier_keys():
    """factlens's key-space form equals the reference's ``solve(P (K^T K + K_p^T K_p) + l2 I, P K^T R)``;
    the earlier keys' outputs move far less with them in the system than without."""
    g = torch.Generator().manual_seed(0)
    d, n, p_, m = 40, 3, 4, 5  # about 18 null-space directions, more than the 7 keys
    A = _rand(d, d, g=g)
    evals = torch.logspace(-4, 1, d, dtype=torch.float64)
    Q, _ = torch.linalg.qr(A)
    st = KeyStatistics(Q @ torch.diag(evals) @ Q.T, 1000, 0)
    U, info = null_space_basis(st, 2e-2)
    assert info["nullspace_dim"] == int((evals < 2e-2).sum()) and 0 < info["nullspace_energy"] < 0.01
    P = U @ U.T
    K, Kp, R = _rand(n, d, g=g), _rand(p_, d, g=g), _rand(n, m, g=g)
    for l2 in (0.5, 10.0):
        ref = torch.linalg.solve(P @ (K.T @ K + Kp.T @ Kp) + l2 * torch.eye(d, dtype=torch.float64), P @ K.T @ R)
        torch.testing.assert_close(alphaedit_update(U, K, R, l2=l2, previous_keys=Kp), ref, rtol=1e-9, atol=1e-10)
        ref0 = torch.linalg.solve(P @ K.T @ K + l2 * torch.eye(d, dtype=torch.float64), P @ K.T @ R)
        torch.testing.assert_close(alphaedit_update(U, K, R, l2=l2), ref0, rtol=1e-9, atol=1e-10)
    # the preserved directions (eigenvalue >= threshold) get exactly no change
    kept = Q[:, evals >= 2e-2].T
    dW = alphaedit_update(U, K, R, l2=0.5, previous_keys=Kp)
    assert float((kept @ dW).abs().max()) < 1e-10
    # the earlier facts' keys: their outputs move less when they are in the system
    small = alphaedit_update(U, K, R, l2=1e-4, previous_keys=Kp)
    with_p = float((Kp @ small).norm())
    without = float((Kp @ alphaedit_update(U, K, R, l2=1e-4)).norm())
    assert with_p < 1e-3 * without
    torch.testing.assert_close(K @ small, R, rtol=1e-3, atol=1e-3)  # and the new keys still reach their values
    with pytest.raises(ValueError, match="no eigenvalue.*below nullspace_threshold"):
        null_space_basis(st, 1e-5)


def test_config_checks():
    with pytest.raises(ValueError, match="nullspace_threshold must be > 0"):
        AlphaEditConfig(nullspace_threshold=0.0)
    with pytest.raises(ValueError, match="l2 must be > 0"):
        AlphaEditConfig(l2=0.0)
    assert AlphaEditConfig.from_edit_config(EditConfig(seed=3, methods={"alphaedit": {"l2": 2.0}})).l2 == 2.0


def test_general_text_keys_move_by_at_most_the_threshold(task):
    """The guarantee, on the keys the statistics were taken on (``K0``, a tiny model's MLP 1):
    ``|K0 dW| <= sqrt(N * threshold) |dW|`` for AlphaEdit's update (it lies in the span of
    eigenvalues below the threshold), while MEMIT's moves them more per unit of update."""
    m = tiny_model(n_layers=3)
    snap = snapshot(m)
    mask = Mask.from_labels(["L1.mlp"])
    n = FAST["n_cov_tokens"]
    evals = torch.linalg.eigvalsh(factlens.editing.covariance.key_statistics(m, 1, n_tokens=n).mom2)
    thr = float(torch.quantile(evals, 0.1))  # the 10 % quietest directions may be used
    a = alphaedit(m, mask, task, config=AlphaEditConfig(**FAST, nullspace_threshold=thr, l2=1e-3))
    b = memit(m, mask, task, config=MemitConfig(**FAST))
    assert_unchanged(m, snap) and no_hooks(m)
    K0 = collect_keys(m, 1, token_chunks(m, load_texts(None), seq_len=128, n_chunks=math.ceil(n / 127)))[:n].double()

    def per_unit(res):
        d = res.deltas["blocks.1.mlp.W_out"]
        dW = (d.new - d.old).double().reshape(K0.shape[1], -1)
        return float((K0 @ dW).norm() / (math.sqrt(n) * dW.norm()))

    assert per_unit(a) <= math.sqrt(thr) * 1.001
    assert per_unit(a) < 0.6 * per_unit(b)  # measured 0.011 against 0.022
    info = a.meta["layers"][0]
    # the BOS key's direction is taken out of the null space (protect_bos)
    assert info["nullspace_dim"] == int((evals < thr).sum()) - 1 and info["n_previous_keys"] == 0
    assert 0 < info["bos_key_in_nullspace"] <= 1
    assert info["nullspace_energy"] < 1e-3
    assert a.meta["method"] == "alphaedit" and a.meta["alphaedit_config"]["nullspace_threshold"] == thr


def test_the_update_leaves_the_mlp_output_at_bos_as_it_was(task):
    """C leaves position 0 out, so the BOS key (the same in every prompt, an attention sink) lay mostly
    in the null space: on Gemma 3 270M an 8-fact edit changed the MLP output at BOS by 23 % at layer 3.
    protect_bos takes its direction out of the null space."""
    from factlens.components import mlp_hook
    from factlens.editing.alphaedit import bos_key

    m = tiny_model(n_layers=4)
    mask = Mask.from_labels(["L1.mlp", "L2.mlp"])
    evals = torch.linalg.eigvalsh(factlens.editing.covariance.key_statistics(m, 1, n_tokens=1500).mom2)
    thr = float(torch.quantile(evals, 0.5))

    def bos_change(res, layer):
        k = bos_key(res.model, layer).double()
        new, old = res.model.blocks[layer].mlp.W_out.double(), m.blocks[layer].mlp.W_out.double()
        return float((k @ (new - old)).norm() / (k @ old).norm())

    on = alphaedit(m, mask, task, config=AlphaEditConfig(**FAST, nullspace_threshold=thr, l2=1e-3))
    off = alphaedit(m, mask, task, config=AlphaEditConfig(**FAST, nullspace_threshold=thr, l2=1e-3, protect_bos=False))
    assert bos_key(m, 1) is not None
    for layer in (1, 2):
        assert bos_change(on, layer) < 1e-6 < 1e-3 < bos_change(off, layer)  # float32 rounding of W_out
    with torch.no_grad():  # so the whole residual stream at BOS is the unedited model's
        _, c_on = on.model.run_with_cache(m.to_tokens("The river"), names_filter=mlp_hook(2, "out"))
        _, c_m = m.run_with_cache(m.to_tokens("The river"), names_filter=mlp_hook(2, "out"))
    torch.testing.assert_close(c_on[mlp_hook(2, "out")][0, 0], c_m[mlp_hook(2, "out")][0, 0], rtol=1e-5, atol=1e-6)
    assert _acc(on.model, task.forget, "target_new") >= _acc(off.model, task.forget, "target_new") - 1 / 3


def _acc(model, recs, attr):
    lps = candidate_logprobs(model, [r.prompt for r in recs], [CANDS] * len(recs))
    return sum(CANDS[int(lp.argmax())] == getattr(r, attr) for r, lp in zip(recs, lps)) / len(recs)


def test_planted_edits_and_sequence_keeps_the_first_chunk(monkeypatch):
    """On the planted model every fact is edited and the held-out facts keep their answers; in a
    sequence of two chunks the second edit gets the first chunk's facts as ``edited_before`` and
    the first chunk stays edited."""
    torch.set_flush_denormal(True)
    try:
        p = planted_fact_model()
        # the planted keys' eigenvalues are all below 2e-2 (every direction free); clamp as MEMIT's planted test
        cfg = EditConfig(methods={"alphaedit": {"clamp_norm_factor": 4.0, "l2": 1e-2}})
        one = factlens.edit(p.model, Mask([p.lookup_mlp]), p.task, method="alphaedit", config=cfg, show_progress=False)
        assert isinstance(one, EditResult)
        assert _acc(one.model, p.task.forget, "target_new") == 1.0
        assert _acc(one.model, p.task.maintain, "answer") >= 0.9
        seen = []
        real = editor_mod.load

        def spy(ref):
            fn = real(ref)
            if getattr(fn, "__name__", "") != "alphaedit":
                return fn

            def wrapped(*a, **k):
                seen.append(len(k.get("edited_before") or ()))
                return fn(*a, **k)
            return wrapped

        monkeypatch.setattr(editor_mod, "load", spy)
        t = replace(p.task, chunks=(p.task.forget[:4], p.task.forget[4:]))
        seq = edit_sequential(p.model, Mask([p.lookup_mlp]), t, config=cfg, method="alphaedit")
        assert seen == [0, 4]
        assert [r.meta["layers"][0]["n_previous_keys"] for r in seq.results] == [0, 4]
        assert _acc(seq.model, p.task.forget[:4], "target_new") == 1.0
        assert _acc(seq.model, p.task.forget[4:], "target_new") == 1.0
        assert no_hooks(p.model)
        seq.revert()
    finally:
        torch.set_flush_denormal(False)


def test_sequences_with_memit_and_rome(task):
    """edit_sequential runs any registered method per chunk (it ran masked fine-tuning only)."""
    m = tiny_model(n_layers=3)
    snap = snapshot(m)
    t = replace(task, chunks=(task.forget[:2], task.forget[2:]))
    fast = {"v_num_grad_steps": 4, "prefix_lengths": [[5, 2]], "n_cov_tokens": 800}
    for method in ("memit", "rome"):
        cfg = EditConfig(methods={method: fast})
        seq = edit_sequential(m, Mask.from_labels(["L1.mlp"]), t, config=cfg, method=method)
        assert len(seq) == 2 and all(r.meta["method"] == method for r in seq.results)
        # the runner's record keeps each chunk's diagnostics (a sequential result has no meta of its own)
        summary = _edit_summary(seq, cfg)
        assert [c["method"] for c in summary["meta"]["chunks"]] == [method, method]
        assert not torch.equal(dict(seq.model.named_parameters())["blocks.1.mlp.W_out"], snap.state["blocks.1.mlp.W_out"])
        assert_unchanged(m, snap)


def test_progress_bars_name_the_method(task, monkeypatch):
    """AlphaEdit's progress bars said "MEMIT targets" / "MEMIT layers"."""
    import factlens.editing.memit as memit_mod

    seen = []
    real = memit_mod.progress_bar

    def spy(it, *a, desc=None, **k):
        seen.append(desc)
        return real(it, *a, desc=desc, **k)

    monkeypatch.setattr(memit_mod, "progress_bar", spy)
    alphaedit(tiny_model(n_layers=3), Mask.from_labels(["L1.mlp"]), task, config=AlphaEditConfig(**FAST))
    assert seen == ["AlphaEdit targets", "AlphaEdit layers"]


def test_a_null_space_that_only_the_bos_key_fills_is_refused(task, monkeypatch):
    """A one-direction null space carrying the BOS key left no direction after protect_bos, and the edit
    silently wrote a zero update (null_space_basis refuses the equivalent empty case)."""
    import factlens.editing.alphaedit as A

    real = A.null_space_basis

    def one_direction(stats, threshold, *, device="cpu"):
        U, info = real(stats, threshold, device=device)
        return U[:, :1], {**info, "nullspace_dim": 1}

    monkeypatch.setattr(A, "null_space_basis", one_direction)
    m = tiny_model(n_layers=3)
    with pytest.raises(ValueError, match="carries the BOS key"):
        alphaedit(m, Mask.from_labels(["L1.mlp"]), task, config=AlphaEditConfig(**FAST, nullspace_threshold=1e9))
    V, share = A.without_key(torch.eye(4, dtype=torch.float64)[:, :1], torch.ones(4, dtype=torch.float64))
    assert V.shape == (4, 0) and share == pytest.approx(0.5)


def test_protect_bos_and_cache_covariance_take_only_true_or_false():
    """``--edit methods.alphaedit.protect_bos=False`` gives the string "False" (not JSON): the config
    took it, and the edit still protected the BOS key (a non-empty string is true)."""
    from factlens.runner.cli_parser import _kv

    _, value = _kv("methods.alphaedit.protect_bos=False")
    with pytest.raises(TypeError, match=r"AlphaEditConfig.protect_bos must be true or false, got 'False' \(str\); "
                                        r"write true or false \(lower case in TOML, JSON and --edit"):
        EditConfig(methods={"alphaedit": {"protect_bos": value}}).method_config("alphaedit")
    with pytest.raises(TypeError, match="AlphaEditConfig.cache_covariance must be true or false, got 'no'"):
        AlphaEditConfig(cache_covariance="no")
    _, value = _kv("methods.alphaedit.protect_bos=false")
    assert EditConfig(methods={"alphaedit": {"protect_bos": value}}).method_config("alphaedit").protect_bos is False


def test_a_diverging_target_optimization_raises_and_leaves_the_model():
    """float16 and a huge v_lr: the NaN targets gave a NaN update that was written into W_out."""
    p = planted_fact_model(n_subjects=12)
    m = p.model.to(torch.float16)
    before = snapshot(m)
    cfg = AlphaEditConfig(n_cov_tokens=300, cache_covariance=False, prefix_lengths=((4, 1),), v_num_grad_steps=20,
                          clamp_norm_factor=None, v_lr=3e4, nullspace_threshold=1e-2)
    with pytest.raises(FloatingPointError, match=r"AlphaEdit's value optimization diverged at step \d+ for fact 0 .*"
                                                 r"model dtype torch.float16.*Lower AlphaEditConfig.v_lr "
                                                 r"\(--edit methods.alphaedit.v_lr=...\)"):
        alphaedit(m, Mask.from_labels(["L1.mlp"]), p.task, config=cfg, inplace=True)
    assert_unchanged(m, before)
    assert no_hooks(m)


def test_a_non_finite_update_is_not_written_and_the_inplace_model_is_restored(task, monkeypatch):
    """The closed form's update itself is checked before it is added (here: a NaN from the second
    layer's solve, after the first layer's update was written)."""
    import factlens.editing.alphaedit as alphaedit_mod

    real, calls = alphaedit_mod.alphaedit_update, []

    def nan_second(*a, **k):
        calls.append(1)
        return real(*a, **k) * (float("nan") if len(calls) == 2 else 1.0)

    monkeypatch.setattr(alphaedit_mod, "alphaedit_update", nan_second)
    m = tiny_model(n_layers=3)
    before = snapshot(m)
    with pytest.raises(FloatingPointError, match=r"AlphaEdit's update of layer 1's W_out has \d+ non-finite"):
        alphaedit(m, Mask.from_labels(["L0.mlp", "L1.mlp"]), task, config=AlphaEditConfig(**FAST), inplace=True)
    assert_unchanged(m, before)
