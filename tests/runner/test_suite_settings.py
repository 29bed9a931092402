"""The settings of suites without an EvalConfig field (``eval.other_suites``): the resolved run
record and ``factlens compare`` hold every field of the suites run, defaults included, so runs
with other settings are not paired, and a resume that spells out a default is not refused."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from factlens.config import ConfigBase
from factlens.evaluation import EvalConfig, Suite
from factlens.evaluation.logit_lens import LogitLensConfig
from factlens.evaluation.result import EvalResult, SuiteResult
from factlens.runner import RunConfig
from factlens.runner.executor import ConfigMismatchError, RunDir
from factlens.runner.stored import upgrade_stored

pytestmark = pytest.mark.usefixtures("one_thread")

LENS = ("standard", "logit_lens")


def _cfg(**kw) -> RunConfig:
    base = dict(task="planted", model="planted", localizations=("all_mlps",), suites=LENS, show_progress=False)
    return RunConfig(**{**base, **kw})


def test_the_resolved_record_holds_every_field_of_the_suites_run():
    """``resolved.eval.other_suites`` held only the fields given: a changed default went unseen."""
    ev = _cfg(eval={"other_suites": {"logit_lens": {"folds": 3}}}).resolved()["eval"]
    assert ev["other_suites"] == {"logit_lens": {**LogitLensConfig().to_dict(), "folds": 3}}
    assert _cfg(suites=("standard",)).resolved()["eval"]["other_suites"] == {}  # a suite not run: nothing


def test_a_resume_that_spells_out_a_default_resumes_and_another_value_is_refused(tmp_path):
    out = tmp_path / "run"
    RunDir(out).open(_cfg(out=str(out)))
    RunDir(out).open(_cfg(out=str(out), eval={"other_suites": {"logit_lens": {"top_k": 20}}}))  # the default
    with pytest.raises(ConfigMismatchError, match=r"resolved eval: other_suites: .*'top_k': 20.* \(stored\) != "
                                                  r".*'top_k': 1.* \(now\)"):
        RunDir(out).open(_cfg(out=str(out), eval={"other_suites": {"logit_lens": {"top_k": 1}}}))


def test_a_folder_written_with_the_tables_as_given_still_resumes(tmp_path):
    """Older records stored the fields given ({} for a run with the defaults): upgraded, they hold
    every field, so the same settings resume (spelled out or not) and other ones are refused."""
    out = tmp_path / "old"
    RunDir(out).open(_cfg(out=str(out)))
    path = out / "run_config.json"
    stored = json.loads(path.read_text())
    stored["resolved"]["eval"]["other_suites"] = {}  # as older versions wrote it
    path.write_text(json.dumps(stored))
    assert upgrade_stored(stored)["resolved"]["eval"]["other_suites"] == {"logit_lens": LogitLensConfig().to_dict()}
    RunDir(out).open(_cfg(out=str(out)))
    path.write_text(json.dumps(stored))
    RunDir(out).open(_cfg(out=str(out), eval={"other_suites": {"logit_lens": {"top_k": 20}}}))
    path.write_text(json.dumps(stored))
    with pytest.raises(ConfigMismatchError, match="other_suites"):
        RunDir(out).open(_cfg(out=str(out), eval={"other_suites": {"logit_lens": {"top_k": 1}}}))


def _setup(cfg: EvalConfig, suites=LENS) -> dict:
    from factlens.comparison import _setup

    ev = EvalResult({s: SuiteResult(s, ()) for s in suites}, meta={"config": cfg.to_dict()})
    return _setup({"model": "m", "eval": ev})


def test_compare_pairs_suite_settings_through_every_field():
    """A run with the logit lens's default top_k and one with top_k=1 were paired (only one
    named the field) and the settings difference reported as an effect."""
    from factlens.comparison import _check_same_setup

    default, one = EvalConfig(), EvalConfig(other_suites={"logit_lens": {"top_k": 1}})
    with pytest.raises(ValueError, match=r"measured seed 0 differently \(eval\.other_suites\.logit_lens\.top_k: "
                                         r"20 vs 1\)"):
        _check_same_setup("a", _setup(default), "b", _setup(one), 0, fix="")
    spelled = EvalConfig(other_suites={"logit_lens": {"top_k": 20}})
    assert _setup(spelled) == _setup(default)  # a stored table as given and the same settings written out
    assert "eval.other_suites.logit_lens.top_k" not in _setup(one, suites=("standard",))  # not run: not compared


def test_the_suites_with_settings_that_suite_config_lists_leave_out_other_suites_keys():
    """``suite_config("toy_a")`` said 'toy_a' is not registered, pass its Suite entry, and then listed
    'toy_a' among the suites with settings (its table in other_suites)."""

    @dataclass(frozen=True)
    class ToyConfig(ConfigBase):
        scale: float = 1.0

    cfg = EvalConfig(other_suites={"toy_a": {"scale": 2.0}})
    assert cfg.suite_config(Suite("toy_a", lambda *a, **k: None, config_type=ToyConfig)).scale == 2.0
    with pytest.raises(ValueError, match="'toy_a': it is not registered") as refused:
        cfg.suite_config("toy_a")
    listed = str(refused.value).split("suites with settings: ")[1]
    assert "'logit_lens'" in listed and "toy_a" not in listed
