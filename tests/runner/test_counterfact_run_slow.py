"""The CounterFact main job end to end on the shared sample (issue 11, item 0's CI part).

``factlens run counterfact-editing`` once crashed on real CounterFact data in the FLU's path
patching. The slow test runs the job on Gemma 3 270M with a small ``--max-facts`` and the
smallest evaluation sizes the runner has (:data:`~factlens.runner.config.PLANTED_EVAL_DEFAULTS`)
so that it fits in CI (a few minutes on 2 CPU cores); the fast test checks that the same
command line parses into a valid run config.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factlens.runner import RunDir
from factlens.runner.cli import build_parser, config_from_args, main
from factlens.runner.config import PLANTED_EVAL_DEFAULTS

SAMPLE = "counterfact/counterfact_sample.json"


def _argv(data: Path, out: Path) -> list[str]:
    """``factlens run counterfact-editing`` on a few facts with the smallest settings."""
    evals = [x for k, v in PLANTED_EVAL_DEFAULTS.items() for x in ("--eval", f"{k}={json.dumps(v)}")]
    return ["run", "counterfact-editing", "--model", "gemma-3-270m", "--data", str(data), "--max-facts", "8",
            "--forget-size", "4", "--localizations", "flu,random", "--seeds", "0", "--edit", "steps=5",
            "--suites", "standard,formats", *evals,
            "--no-progress", "--out", str(out)]


def test_counterfact_command_line_parses(tmp_path: Path):
    data = tmp_path / "counterfact_sample.json"
    data.write_text("[]")  # parsing and opening the run folder never read the facts
    cfg = config_from_args(build_parser().parse_args(_argv(data, tmp_path / "out")))
    assert (cfg.task, cfg.model, cfg.max_facts, cfg.forget_size) == ("counterfact-editing", "gemma-3-270m", 8, 4)
    assert cfg.localizations == ("flu", "random") and cfg.seeds == (0,)
    assert cfg.eval_config(0).text.n_chunks == PLANTED_EVAL_DEFAULTS["text"]["n_chunks"]
    assert cfg.edit_config(0).steps == 5
    RunDir(cfg.out).open(cfg)  # a dry run: the run folder with the data's hash
    stored = json.loads((tmp_path / "out/run_config.json").read_text())
    assert stored["inputs"]["data"]["kind"] == "file" and len(stored["inputs"]["data"]["sha256"]) == 64


@pytest.mark.slow
def test_counterfact_main_job_on_the_shared_sample(shared_data: Path, tmp_path: Path):
    data = shared_data / SAMPLE
    if not data.is_file():
        pytest.skip(f"{data} not found")
    out = tmp_path / "counterfact"
    assert main(_argv(data, out)) == 0
    for loc in ("flu", "random"):
        rec = json.loads((out / "runs/seed0" / f"{loc}.json").read_text())
        assert rec["task"]["n_forget"] == 4
        assert rec["restore"]["exact"], rec["restore"]
        assert rec["n_params"] > 0 and rec["eval"]["suites"]
    assert (out / "report.html").stat().st_size > 0
