"""Settings of methods, objectives and suites of one's own: checked when their tables are built.

A plugin's settings (``EditConfig.methods["scale"]``, ``EditConfig.objectives["hinge"]``,
``EvalConfig.other_suites["my_attack"]``) took any value and failed inside the job; an entry's
``config_type`` that was no ``ConfigBase`` failed there with ``AttributeError: ... '_build'``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from factlens.components import Mask
from factlens.config import ConfigBase
from factlens.editing import EditConfig, edit
from factlens.editing.objectives.paper import UnlearnObjective
from factlens.editing.registry import EditMethod, Objective
from factlens.evaluation import EvalConfig, Suite, SuiteResult
from factlens.localization import Localization, ScoringMethod
from factlens.registry import Ref

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class ScaleConfig(ConfigBase):
    factor: float = 0.5
    steps: int = 3
    strict: bool = False


@dataclass
class PlainConfig:
    steps: int = 3


def _passthrough(model, mask, task, *, objective, config, inplace):
    return edit(model, mask, task, objective=objective, config=config.replace(steps=1, methods={}), inplace=inplace)


def _run_toy(model, task, *, original, config, baselines):
    return SuiteResult("toy", ())


SCALE = EditMethod("scale_of_mine", _passthrough, None, config_type=ScaleConfig)
HINGE = Objective("hinge_of_mine", UnlearnObjective, config_type=ScaleConfig)
TOY = Suite("toy_of_mine", _run_toy, config_type=ScaleConfig)


@pytest.mark.parametrize("table, message", [
    ({"factor": "abc"}, r"ScaleConfig.factor must be a number, got 'abc' \(str\)"),
    ({"steps": 2.5}, r"ScaleConfig.steps must be an integer, got 2.5 \(float\)"),
    ({"steps": "3"}, r"ScaleConfig.steps must be an integer, got '3' \(str\)"),
    ({"factor": float("inf")}, r"ScaleConfig.factor must be a finite number"),
    ({"strict": "false"}, r"ScaleConfig.strict must be true or false"),
])
def test_a_plugins_settings_of_the_wrong_type_are_refused_naming_the_table(table, message):
    """Before, ``factor="abc"`` built a ScaleConfig(factor='abc') and the edit failed on it mid-job."""
    with pytest.raises((TypeError, ValueError), match=r"EditConfig.methods\['scale_of_mine'\]: " + message):
        EditConfig(methods={"scale_of_mine": table}).method_config(SCALE)
    with pytest.raises((TypeError, ValueError), match=r"EditConfig.objectives\['hinge_of_mine'\]: " + message):
        EditConfig(objectives={"hinge_of_mine": table}).objective_config(HINGE)
    with pytest.raises((TypeError, ValueError), match=r"EvalConfig.other_suites\['toy_of_mine'\]: " + message):
        EvalConfig(other_suites={"toy_of_mine": table}).suite_config(TOY)
    with pytest.raises((TypeError, ValueError), match="^" + message):
        ScaleConfig.from_dict(table)


def test_edit_refuses_a_bad_table_of_its_own_method_before_editing(planted):
    """``edit`` checks the tables of the method it runs (check_tables) up front."""
    config = EditConfig.fast(steps=1, methods={"scale_of_mine": {"steps": 2.5}})
    with pytest.raises(TypeError, match=r"EditConfig.methods\['scale_of_mine'\]: ScaleConfig.steps must be an integer"):
        edit(planted.model, Mask([planted.lookup_mlp]), planted.task, method=SCALE, config=config)


def test_good_plugin_settings_still_build():
    import numpy as np

    built = EditConfig(methods={"scale_of_mine": {"factor": 2, "steps": np.int64(4), "strict": np.bool_(True)}}) \
        .method_config(SCALE)
    assert built == ScaleConfig(factor=2, steps=4, strict=True) and type(built.strict) is bool


@pytest.mark.parametrize("bad", [PlainConfig, {"steps": 1}, dict])
def test_a_config_type_that_is_no_config_base_is_refused_when_the_entry_is_built(bad):
    """A plain dataclass (or a dict) failed when the table was first built, mid-job, with
    ``AttributeError: type object 'PlainConfig' has no attribute '_build'``."""
    must = "config_type must subclass factlens.config.ConfigBase"
    with pytest.raises(TypeError, match=rf"edit method 'plain': {must}"):
        EditMethod("plain", _passthrough, None, config_type=bad)
    with pytest.raises(TypeError, match=rf"objective 'plain': {must}"):
        Objective("plain", UnlearnObjective, config_type=bad)
    with pytest.raises(TypeError, match=rf"suite 'plain': {must}"):  # (accepted, until 2026-12-06)
        Suite("plain", _run_toy, config_type=bad)


def test_a_config_type_that_is_no_config_base_is_refused_when_used():
    """A Ref is loaded lazily: it is checked when its settings are built."""
    ref = Ref("factlens.components", "Component")  # a dataclass, not a ConfigBase
    must = "config_type must subclass factlens.config.ConfigBase"
    with pytest.raises(TypeError, match=rf"edit method 'ref_method': {must}"):
        EditConfig().method_config(EditMethod("ref_method", _passthrough, None, config_type=ref))
    with pytest.raises(TypeError, match=rf"objective 'ref_objective': {must}"):
        EditConfig().objective_config(Objective("ref_objective", UnlearnObjective, config_type=ref))
    with pytest.raises(TypeError, match=rf"suite 'plain': {must}"):
        EvalConfig().suite_config(Suite("plain", _run_toy, config_type=ref))


def test_an_unregistered_objective_for_a_method_taking_every_objective_says_it_is_not_registered(planted):
    """``objectives=None`` means every *registered* objective; the message listed them as if the
    method did not support the objective ("does not support objective 'x'; it supports [...]")."""
    method = EditMethod("any_objective", _passthrough, None)
    with pytest.raises(ValueError, match=r"objective 'local_unlearn' is not registered: edit method 'any_objective' "
                                         r"has objectives=None, which means every registered objective") as e:
        edit(planted.model, Mask([planted.lookup_mlp]), planted.task, method=method,
             objective=Objective("local_unlearn", UnlearnObjective), config=EditConfig.fast(steps=1))
    assert "entry point" in str(e.value)
    with pytest.raises(ValueError, match=r"edit method 'rome' does not support objective 'unlearn'"):
        from factlens.editing.registry import EDIT_METHODS

        EDIT_METHODS.get("rome").check_objective("unlearn")  # a declared tuple: the old message


def test_the_entry_table_of_docs_extending_lists_every_field_of_each_entry_type():
    """The table listed ``EditMethod(...)`` without ``takes_edited_before``, which the text describes."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text()
    for entry_type in (ScoringMethod, Localization, Suite, EditMethod, Objective):
        (listed,) = re.findall(rf"\| `{entry_type.__name__}\(([^)]*)\)`", doc)
        assert [f.strip() for f in listed.split(",")] == [f.name for f in dataclasses.fields(entry_type)]
