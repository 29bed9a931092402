"""Shared fixtures: paths to the reference data (skipped when absent) and the real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACTLENS_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (the reference data); tests using it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def shared_data_or_none() -> Path | None:
    """``../shared/data`` when present, else ``None`` (for tests that run either way, with a fallback)."""
    return SHARED if SHARED.is_dir() else None


@pytest.fixture(scope="session", autouse=True)
def no_progress_bars():
    """No tqdm bars in test output: ``factlens.progress(False)`` for the whole session.

    Tests of the bars themselves turn them on with ``factlens.progress(True)`` (tests/test_progress.py).
    """
    import factlens

    with factlens.progress(False):
        yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest single-threaded (and do not spin-wait on a busy machine).

    Use per module: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def gemma():
    """The embedded Gemma 3 270M (slow tests only)."""
    import factlens

    return factlens.load_model("gemma-3-270m")


@pytest.fixture(scope="session")
def planted_two_seed_run(tmp_path_factory) -> Path:
    """A planted run folder (flu and random, seeds 0 and 1, the standard suite) for the CLI's table
    commands (``compare``, ``equivalence``); read it, never write into it."""
    from factlens.runner.cli import main

    out = tmp_path_factory.mktemp("planted_run") / "planted"
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--no-progress", "--no-report",
                 "--localizations", "flu,random", "--suites", "standard", "--seeds", "0,1"]) == 0
    return out


@pytest.fixture(scope="module")
def planted():
    """The planted-fact model (lookup MLP L1, extraction head L2H1), fresh for each test module."""
    from factlens.testing import planted_fact_model

    return planted_fact_model()


@pytest.fixture(scope="module")
def planted12():
    """The planted-fact model with 12 subjects (enough pairs for patching methods)."""
    from factlens.testing import planted_fact_model

    return planted_fact_model(n_subjects=12)


@pytest.fixture(scope="module")
def given_pairs12(planted12):
    """``planted12``'s automatic corrupted pairs as user-given ``corrupted_prompts`` and
    ``corrupted_answers``, and its records with those answers as ``target_new``."""
    from dataclasses import replace

    from factlens.localization.pairs import make_pairs

    p = planted12
    pairs = make_pairs(p.model, p.dataset)
    assert len(pairs) == len(p.dataset)
    by_token = {p.model.to_single_token(" " + a): a for a in p.dataset.candidates}
    answers = [by_token[int(t)] for t in pairs.corrupted_answer]
    return list(pairs.corrupted.prompts), answers, [replace(r, target_new=a) for r, a in zip(p.dataset, answers)]


@pytest.fixture
def tiny_tl_configs(monkeypatch):
    """TransformerLens's config reader answering for the tiny Hugging Face models of the model tests
    (GPT-2 and Gemma 3 shapes, 2 layers) without the Hub."""
    import transformer_lens.loading_from_pretrained as tl_loading

    real = tl_loading.convert_hf_model_config

    def convert(name, **kwargs):
        if "gemma" in name:
            d = real(name)
            d.update(n_layers=2, d_model=32, d_mlp=64, n_heads=4, n_key_value_heads=2, d_head=8, d_vocab=100,
                     n_ctx=64, window_size=16, use_local_attn=True, attn_types=["local", "global"],
                     tokenizer_name=None)
            return d
        return dict(d_model=32, d_head=8, n_heads=4, d_mlp=128, n_layers=2, n_ctx=64, eps=1e-5, d_vocab=100,
                    act_fn="gelu_new", use_attn_scale=True, use_local_attn=False, normalization_type="LN",
                    scale_attn_by_inverse_layer_idx=False, original_architecture="GPT2LMHeadModel",
                    tokenizer_name=None, positional_embedding_type="standard")

    monkeypatch.setattr(tl_loading, "convert_hf_model_config", convert)
