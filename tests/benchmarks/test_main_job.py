"""benchmarks/main_job.py builds a valid run config for any suite selection."""

from __future__ import annotations

import argparse

import pytest


@pytest.mark.parametrize("suites", ["standard", "standard,relearning", ""])
def test_run_config_passes_the_text_source_only_to_suites_that_read_it(load_benchmark, monkeypatch, tmp_path, suites):
    mj = load_benchmark("main_job")
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "test.txt").write_text("Some general text.\n" * 50)
    monkeypatch.setattr(mj, "SHARED", tmp_path)  # reference data present (before the fix: standard alone was refused)
    cfg = mj.run_config(argparse.Namespace(model="planted", localization="flu", forget_size=8, seed=0, suites=suites))
    reads = suites == "" or "relearning" in suites
    assert (cfg.eval.get_path("text.source") is not None) == reads


def test_scaling_runs_a_bf16_model_and_knows_the_papers_sizes(load_benchmark, tmp_path):
    """The GPU check of the issue (bf16, adamw8bit, Gemma-2-9B / Llama-3-8B sizes) needs the scaling
    benchmark to take a device, a dtype and an optimizer; it built float32 CPU models only."""
    import torch

    from factlens.testing import shaped

    mj = load_benchmark("main_job")
    args = argparse.Namespace(threads=1, variant="runner", size="tiny", scaling_steps=1, scaling_suites="standard",
                              device="cpu", dtype="bfloat16", optimizer="adamw", profile=str(tmp_path / "prof"))
    out = mj.scaling_one(args)
    assert out["dtype"] == "bfloat16" and [r["stage"] for r in out["rows"]][:2] == ["build", "edit"]
    # --profile: one cProfile file per stage (the GPU run's edit stage needs one; --scaling ignored it)
    assert sorted(f.name for f in (tmp_path / "prof").iterdir()) == sorted(
        f"tiny.runner.{r['stage']}.prof" for r in out["rows"])
    # the runner's settings, which this mode ignored (edit checkpointed, originals and record in memory, rechecks)
    assert out["settings"] == {"edit_checkpoint": False, "originals_offload": True, "offload": True, "recheck": False}
    # the real models' parameters without embeddings (Gemma-2-9B: 9.24B with its tied embedding of 0.92B;
    # Llama-3-8B: 8.03B with 1.05B of untied embedding and unembedding)
    for size, n in (("gemma2-9b", 8.32e9), ("llama3-8b", 6.98e9)):
        shape = dict(getattr(shaped, mj.SCALING_SIZES[size]))
        L, d, h, kv, dh, m = (shape[k] for k in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp"))
        assert L * (d * h * dh * 2 + d * kv * dh * 2 + 3 * d * m) == pytest.approx(n, rel=0.01), size
    m = shaped.gemma3_shaped(n_heads=4, n_kv_heads=2, dtype=torch.bfloat16)
    assert m.cfg.n_key_value_heads == 2 and next(m.parameters()).dtype == torch.bfloat16


def test_a_variant_that_gives_nan_is_not_read_as_identical(load_benchmark):
    """max(|a - b|) over values with a NaN can be 0.0 (max([0.0, nan]) == 0.0 in Python): a variant
    that produced NaN where the other had a number was reported as bitwise the same."""
    mj = load_benchmark("main_job")
    nan = float("nan")
    assert max(mj.value_diffs({"a": 0.5, "b": 1.0}, {"a": 0.5, "b": nan}).values()) == float("inf")
    assert mj.value_diffs({"a": nan}, {"a": nan}) == {"a": 0.0}


def test_the_total_rows_peak_leaves_prepare_out_as_its_times_do(load_benchmark):
    """The "total (without prepare)" row summed the other stages' times but took the peak over every row:
    a first load's GGUF conversion (8 GB) read as the job's peak."""
    st = load_benchmark("main_job").Stages()
    st.rows = [{"stage": "prepare", "wall_s": 1.0, "cpu_s": 1.0, "peak_rss_gb": 8.0},
               {"stage": "edit", "wall_s": 2.0, "cpu_s": 3.0, "peak_rss_gb": 4.2}]
    assert st.table("t").splitlines()[-1] == "| **total (without prepare)** | 2.0 | 3.0 | 4.20 |"


def test_the_localize_benchmark_refuses_more_pairs_than_there_are_subjects(load_benchmark):
    """Asking for more pairs than there are facts with two-token subjects looped forever in a worker that the
    parent waited on: the benchmark hung without a word."""
    from factlens.testing import planted_fact_model

    bench = load_benchmark("localize")
    with pytest.raises(SystemExit, match=r"facts have two-token subjects; use --n-pairs <="):
        bench._records(planted_fact_model().model, 10**6)
