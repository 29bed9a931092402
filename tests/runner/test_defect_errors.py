"""A ValueError raised outside factlens is a defect, not a refused setting (factlens.runner.defects.defect_location).

``factlens run`` printed every ValueError of a job as ``factlens: error: <message>`` with exit 2, no
traceback and no unit: a bug in a plugin's code (or a ValueError of torch or numpy) read as a bad
setting. Refused settings (factlens's own ValueErrors) keep their clean exit 2.
"""

from __future__ import annotations

import json

import pytest

from factlens.editing import MaskNotSupported
from factlens.runner.cli import main
from factlens.runner.defects import defect_location

pytestmark = pytest.mark.usefixtures("one_thread")

_RUN = ["run", "planted", "--model", "planted", "--localizations", "all_mlps", "--suites", "standard",
        "--edit", "steps=1", "--no-progress", "--no-report"]


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test inspects it
        return e
    raise AssertionError("no exception")


def _plugin_bug():
    raise ValueError("operands could not be broadcast")


def _refuse_mask():
    raise MaskNotSupported("needs one MLP layer")


def test_defect_location_tells_a_setting_from_a_defect():
    from factlens.runner import RunConfig

    where = defect_location(_raised(_plugin_bug))
    assert where is not None and where.endswith("in _plugin_bug") and "test_defect_errors.py" in where
    # the standard library's frames do not decide: the code that called json does
    assert "in <lambda>" in defect_location(_raised(lambda: json.loads("{")))
    assert defect_location(_raised(lambda: RunConfig(task="planted", model="planted", seeds=()))) is None  # factlens's
    assert defect_location(_raised(_refuse_mask)) is None  # factlens's own error type, raised by a plugin
    assert defect_location(ValueError("sent back by a worker, without its traceback")) is None
    assert defect_location(_raised(lambda: 1 / 0)) is None  # not a ValueError: propagates anyway


def _buggy_edit(model, mask, task, *, objective, config, inplace):
    _plugin_bug()


def test_a_plugins_value_error_in_a_job_propagates_naming_the_unit(monkeypatch, tmp_path, capsys):
    from factlens.editing import registry
    from factlens.editing.registry import EditMethod

    monkeypatch.setattr(registry, "EDIT_METHODS", registry.EDIT_METHODS.with_entry(
        EditMethod("buggy", _buggy_edit, None)))
    with pytest.raises(RuntimeError, match=r"job seed0/all_mlps\+buggy: ValueError raised outside factlens, at "
                                           r".*test_defect_errors.py:\d+ in _plugin_bug: operands could not") as err:
        main([*_RUN, "--methods", "buggy", "--out", str(tmp_path / "out")])
    assert isinstance(err.value.__cause__, ValueError)  # the original, with its traceback
    assert "factlens: error:" not in capsys.readouterr().err


def test_a_value_error_outside_factlens_in_the_driver_propagates(monkeypatch, tmp_path):
    from factlens.runner import executor

    def broken(*a, **k):
        _plugin_bug()

    monkeypatch.setattr(executor, "run_experiment", broken)
    with pytest.raises(ValueError, match="operands could not be broadcast"):
        main([*_RUN, "--out", str(tmp_path / "out")])


def test_a_refused_setting_keeps_its_clean_exit_2(tmp_path, capsys):
    assert main([*_RUN, "--forget-size", "1000", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "factlens: error:" in err and "Traceback" not in err
