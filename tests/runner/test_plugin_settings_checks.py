"""The runner's checks of the settings of installed methods, objectives and suites: an objective's
table the run does not use is warned (as an unused method's is), a ``config_type`` that is no
settings type is refused before any file is written."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from factlens import plugins
from factlens.runner.config import RunConfig
from factlens.runner.config_checks import late_failures, unread_settings


def _cfg(out: Path, **kw) -> RunConfig:
    base = dict(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",), out=str(out),
                show_progress=False)
    return RunConfig(**{**base, **kw})


def test_settings_of_an_objective_the_run_does_not_use_are_warned(tmp_path: Path):
    """``--edit objectives.graddiff.reduction=token`` without ``--objectives graddiff`` changed nothing,
    without a word (the ``methods`` table was already warned about)."""
    unused = _cfg(tmp_path / "a", edit={"objectives.graddiff.reduction": "token"})
    (warning,) = [w for w in unread_settings(unused) if "objective" in w]
    assert warning.startswith("edit settings of objective(s) ['graddiff'] change nothing")
    assert "['inject']" in warning  # the task's own objective, when the run names none
    used = _cfg(tmp_path / "b", objectives=("inject", "graddiff"), edit={"objectives.graddiff.reduction": "token"})
    assert not [w for w in unread_settings(used) if "objective" in w]
    assert not [w for w in unread_settings(unused, objectives=("graddiff",)) if "objective" in w]  # a resumed folder's



SOURCE = """
from dataclasses import dataclass

from factlens.evaluation import Suite, SuiteResult
from factlens.registry import Ref


@dataclass
class PlainConfig:
    steps: int = 3


def run_plain(model, task, *, original=None, config=None, baselines=None):
    return SuiteResult("plain", ())


PLAIN = Suite("plain", run_plain, config_type=Ref(__name__, "PlainConfig"))
"""


@pytest.fixture
def plain_suite(tmp_path, monkeypatch):
    """An installed distribution ``demo-plugin`` 0.1 with the suite ``plain`` (as in tests/test_plugins.py)."""
    module = f"factlens_demo_plain_{abs(hash(str(tmp_path))) % 10**6}"
    root = tmp_path / "site"
    root.mkdir()
    (root / f"{module}.py").write_text(textwrap.dedent(SOURCE))
    info = root / "demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[factlens.suites]\nplain = {module}:PLAIN\n")
    monkeypatch.syspath_prepend(str(root))
    plugins.refresh()
    yield
    sys.modules.pop(module, None)
    plugins.refresh()


def test_a_suite_whose_config_type_is_no_config_base_is_a_bad_setting(plain_suite, tmp_path: Path):
    """It failed as a traceback (``AttributeError: ... '_build'``) while the run folder was opened."""
    with pytest.raises(ValueError, match=r"found before any file is written\):\n  suite 'plain': config_type must "
                                         r"subclass factlens.config.ConfigBase"):
        _cfg(tmp_path / "a", suites=("standard", "plain"))
    assert not late_failures(_cfg(tmp_path / "b", suites=("standard",)))
