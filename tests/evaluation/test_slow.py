"""Standard, formats and side-effect suites on the real Gemma 3 270M (unedited: original = model)."""

from __future__ import annotations

import math
import time

import pytest

from factlens.data import filter_known, sports_facts
from factlens.evaluation import EvalConfig, evaluate
from factlens.tasks import sports_athlete_editing

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def unedited_eval(gemma, shared_data_or_none):
    shared = shared_data_or_none
    sp = sports_facts()
    # the built-in list is ordered by sport (its first 60 are all basketball): take 20 per sport
    idx = [i for s in ("basketball", "baseball", "football") for i in [j for j, r in enumerate(sp) if r.answer == s][:20]]
    known = filter_known(gemma, sp.subset(idx))
    task = sports_athlete_editing(known, n_forget=8, n_retain=16, n_maintain=16)
    cfg = EvalConfig(
        text={"n_chunks": 4,
              "source": str(shared / "wikitext2" / "test.txt") if shared and (shared / "wikitext2").is_dir() else None},
        side_effects={"mmlu_source": str(shared / "mmlu" / "dev") if shared and (shared / "mmlu" / "dev").is_dir()
                      else None, "n_mmlu": 57},
    )
    t0 = time.perf_counter()
    res = evaluate(gemma, task, original=gemma, suites=("standard", "formats", "side_effects"), config=cfg,
                   show_progress=False)
    print(f"\nknown {known.meta['known']}; evaluate took {time.perf_counter() - t0:.1f}s {res.meta['seconds']}")
    print(res.to_frame()[["suite", "name", "value", "n", "baseline", "at_chance"]].to_string())
    return task, res


def test_standard_unedited_gemma(unedited_eval):
    task, res = unedited_eval
    s = res["standard"]
    assert s["forget_accuracy"].value == 1.0 and s["forget_accuracy"].n == 8  # known facts only
    assert s["edit_accuracy"].value == 0.0 and s["maintain_accuracy"].value == 1.0
    assert s["forget_prob"].value > 0.5 and s["edit_prob"].value < 0.3
    assert all(m.baseline == pytest.approx(m.value) for m in s.metrics)
    assert len(s.per_fact) == len(task.forget) + len(task.maintain)


def test_formats_unedited_gemma(unedited_eval):
    _, res = unedited_eval
    f = res["formats"]
    assert set(f.extra["formats"]) == {"mcq", "zero_shot", "professional", "sport_played"}
    # Gemma 3 270M cannot do the multiple-choice format: flagged, so nobody reads it as robustness
    assert "mcq" in f.extra["at_chance_formats"]
    assert f["mcq_forget_error"].at_chance and f["mcq_maintain_accuracy"].at_chance
    assert "professional" not in f.extra["at_chance_formats"]
    assert f["professional_maintain_accuracy"].value > 0.8
    assert len(f.extra["format_baselines"]) == 8  # 4 formats x (forget, maintain)


def test_side_effects_unedited_gemma(unedited_eval):
    _, res = unedited_eval
    se = res["side_effects"]
    assert se["kl_divergence"].value == 0.0
    acc, loss = se["next_token_accuracy"], se["next_token_loss"]
    assert 0.1 < acc.value < 0.7 and math.isfinite(loss.value) and 1.0 < loss.value < 10.0
    assert acc.n == 4 * 63
    if res.meta["config"]["side_effects"]["mmlu_source"] is None:
        pytest.skip("no MMLU CSVs in ../shared/data")
    m = se["mmlu_accuracy"]
    assert m.n == 57 and 0.0 <= m.value <= 1.0 and m.baseline == m.value
    # measured: 0.30 (17/57; the model answers "D" most of the time) -> not above chance (0.25 + 2 SE)
    assert m.at_chance == (m.value < 0.25 + 2 * math.sqrt(0.25 * 0.75 / 57))


def test_logit_lens_unedited_gemma(unedited_eval, gemma):
    """The lens through Gemma's RMSNorm, tied unembedding and soft-cap: at the last layer it is the
    model's own output (single-token sports); the early layers do not hold the sport yet."""
    from factlens.evaluation.logit_lens import run_logit_lens

    task, res = unedited_eval
    r = run_logit_lens(gemma, task, original=gemma)
    assert r.extra["n_ambiguous"] == {"forget": 0, "maintain": 0}
    assert r.extra["layers"] == list(range(gemma.cfg.n_layers))
    assert r.extra["true"][-1] == res["standard"]["forget_accuracy"].value == 1.0
    assert r.extra["maintain"][-1] == res["standard"]["maintain_accuracy"].value
    assert min(r.extra["true"][:4]) < 0.75  # the first layers' readings are not the fact yet
    # each half read at the layer chosen on the other (measured: 15 and 15), where it knows every athlete
    assert all(f["layer"] >= 12 for f in r.extra["folds"]) and r["logit_lens_forget_accuracy"].value == 1.0
    # the top k searches the layers that read the retain athletes above chance (measured: 12-17;
    # layer 11 ranks every sport high for every athlete while the true one wins for a quarter)
    assert min(r.extra["topk_layers"]) >= 12 and r.extra["topk_layers"][-1] == gemma.cfg.n_layers - 1
    print(f"\nlogit lens, unedited Gemma: true {r.extra['true']}, top-k {r.extra['topk']} at {r.extra['topk_layers']}, "
          f"folds {[f['layer'] for f in r.extra['folds']]}")


def test_linear_lens_unedited_gemma(unedited_eval, gemma, shared_data_or_none):
    """The least-squares lens explains more of the last layer's residual than the identity (the
    logit lens) at every layer before the last, and at the last layer it is the model's output.
    Measured (WikiText-2, 128 chunks of 64 tokens): held-out r2 0.02 at layer 0 to 0.91 at 16
    with contiguous folds (code of e074e46+; 0.11 to 0.92 with the alternating folds before), the
    identity's below 0 until layer 16 (0.51 there); the sport is still unreadable
    before layer 12 (one answer for everyone), as with the logit lens: at the last token it arrives
    there, not earlier; folds at layers 17 and 16; 47.5 s beside another Gemma job."""
    from factlens.evaluation.config import EvalConfig
    from factlens.evaluation.linear_lens import run_linear_lens

    task, res = unedited_eval
    wiki = shared_data_or_none / "wikitext2" / "test.txt" if shared_data_or_none else None
    cfg = EvalConfig(text={"source": str(wiki) if wiki is not None and wiki.is_file() else None})
    r = run_linear_lens(gemma, task, original=gemma, config=cfg)
    fit = r.extra["fit"]["model"]
    last = gemma.cfg.n_layers - 1
    assert fit["n_tokens"] == 128 * 63 if cfg.text.source else fit["n_tokens"] > 0
    assert fit["r2"][last] == 1.0
    assert all(a > b for a, b in zip(fit["r2"][:last], fit["r2_identity"][:last]))
    assert r.extra["true"][last] == res["standard"]["forget_accuracy"].value == 1.0
    assert min(r.extra["topk_layers"]) >= 12 and r["linear_lens_forget_accuracy"].value == 1.0
    print(f"\nlinear lens, unedited Gemma: r2 {fit['r2']}, identity {fit['r2_identity']}, true {r.extra['true']}, "
          f"folds {[f['layer'] for f in r.extra['folds']]}, {r.seconds:.1f}s")


def test_int8_keeps_the_unedited_gemmas_facts_when_quantized_as_the_checkpoint(unedited_eval, gemma):
    """Quantizing TransformerLens's folded weights (the RMS norm scales, 0 to ~120 on this model,
    multiplied into W_Q/K/V and W_in/W_gate) cost the unedited model a quarter to a third of its
    facts under int8; quantized as the checkpoint (the scales divided out and back) it keeps them,
    as LLM.int8() does. Measured on 96 Sports-Unlearning facts (results/su-quant-unfold): 94
    kept, against 68 with the folded weights; on this fixture's 24 facts 24 against 22 (130 s
    beside another Gemma job, code of 83cbd62)."""
    from factlens.evaluation.attacks import score_task
    from factlens.evaluation.config import EvalConfig
    from factlens.evaluation.quantization import quantized_copy

    task, _ = unedited_eval
    cfg = EvalConfig()
    before = score_task(gemma, task, cfg)
    known = before.accuracy("forget") * len(task.forget) + before.accuracy("maintain") * len(task.maintain)
    kept = {}
    for unfold in (True, False):
        q, info = quantized_copy(gemma, "int8", unfold_norms=unfold)
        s = score_task(q, task, cfg)
        kept[unfold] = s.accuracy("forget") * len(task.forget) + s.accuracy("maintain") * len(task.maintain)
        del q
    print(f"\nint8 on unedited Gemma: {known:.0f} facts known, {kept[True]:.0f} kept as the checkpoint, "
          f"{kept[False]:.0f} with the folded weights")
    assert kept[True] >= known - 1 and kept[False] < kept[True]
