"""``localize_options`` mean the same from Python as from a config file: the given tables go on
top of :data:`~factlens.runner.config.DEFAULT_LOCALIZE_OPTIONS`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factlens.runner import RunConfig, RunDir
from factlens.runner.cli import build_parser, config_from_args
from factlens.runner.pipeline import _localize_options
from factlens.runner.run_dir import ConfigMismatchError

_TABLE = {"causal_tracing_mlps": {"n_samples": 8}}


def _cfg(out: Path, **kw) -> RunConfig:
    return RunConfig(**{**dict(task="planted", model="planted", localizations=("causal_tracing",),
                                suites=("standard",), out=str(out), show_progress=False), **kw})


def test_the_same_table_traces_alike_from_python_and_a_config_file(tmp_path: Path):
    """RunConfig replaced the default tables (causal_tracing then ran with include_resid and 10
    samples) where a config file's table was merged onto them."""
    f = tmp_path / "c.toml"
    f.write_text('task = "planted"\nlocalizations = ["causal_tracing"]\n[localize_options.causal_tracing_mlps]\n'
                 'n_samples = 8\n')
    cli = config_from_args(build_parser().parse_args(["run", "--config", str(f)]))
    py = _cfg(tmp_path, localize_options=_TABLE)
    assert dict(py.localize_options) == dict(cli.localize_options)
    assert _localize_options(py, "causal_tracing") == {"include_resid": False, "n_samples": 5}
    assert _localize_options(py, "causal_tracing_mlps")["n_samples"] == 8
    changed = _cfg(tmp_path, localize_options={"causal_tracing": {"include_resid": True}})
    assert _localize_options(changed, "causal_tracing") == {"include_resid": True, "n_samples": 5}
    assert RunConfig.from_dict(py.to_dict()) == py  # a stored table reads back unchanged


def test_resume_compares_the_stored_tables_as_they_ran(tmp_path: Path):
    """A folder the CLI made (merged tables) resumes from Python with the table alone; one made in
    Python before the merge (the table alone, run without the defaults) is refused, not resumed."""
    out = tmp_path / "run"
    RunDir(out).open(_cfg(out, localize_options=_TABLE))
    assert RunDir(out).stored()["config"]["localize_options"]["causal_tracing"] == {"include_resid": False,
                                                                                      "n_samples": 5}
    RunDir(out).open(_cfg(out, localize_options=_TABLE))
    rd = RunDir(out)
    rec = json.loads(rd.config_path.read_text())
    rec["config"]["localize_options"] = _TABLE  # as RunConfig stored it before
    rd.config_path.write_text(json.dumps(rec))
    with pytest.raises(ConfigMismatchError, match="localize_options"):
        RunDir(out).open(_cfg(out, localize_options=_TABLE))
