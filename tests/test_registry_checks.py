"""Registry entries are checked when they are built, and evaluate labels results by their entry.

Entries that could not work were accepted and failed later, far from the mistake (a misspelt fixed
mask, a required input the suite never got, a bare string read as its letters), and a scoring method
of one's own that draws with the run's seed was given the same seed in every run seed.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass

import pytest

from factlens import plugins
from factlens.components import Component
from factlens.config import ConfigBase
from factlens.editing.registry import EDIT_METHODS, OBJECTIVES, EditMethod
from factlens.evaluation import SUITES, EvalConfig, Suite, SuiteResult, evaluate
from factlens.evaluation.result import Metric
from factlens.localization import registry
from factlens.localization.controls import manual_scores
from factlens.localization.registry import LOCALIZATIONS, METHODS, Localization, ScoringMethod, localization_scores

pytestmark = pytest.mark.usefixtures("one_thread")


def _nothing(*args, **kwargs):
    return None


def _mlp_of_seed(model, dataset, *, seed: int = 0):
    """A seeded toy method: the MLP of layer ``seed`` (mod the number of layers) scores 1."""
    return manual_scores(model, dataset, components=[Component("mlp", seed % model.cfg.n_layers)])


# --- ScoringMethod.seeded: the localizations compared=True gives a method are seeded as it is -------------

def test_the_built_in_localizations_are_seeded_as_before():
    """``_compared`` decided by the name "random"; the entries' own field gives the same localizations."""
    seeded = [loc.name for loc in LOCALIZATIONS.entries if loc.seeded]
    assert seeded == ["flu", "random", "random_mlps"]
    assert [m.name for m in METHODS.entries if m.seeded] == ["random"]


def test_a_seeded_method_of_ones_own_gets_each_run_seed(planted, monkeypatch):
    """A plugin's compared method that draws with its seed got seeded=False localizations: the runner
    gave it seed 0 in every run seed, and the spread across seeds was zero."""
    noisy = ScoringMethod("noisy_mlp", _mlp_of_seed, ("seed",), compared=True, seeded=True)
    monkeypatch.setattr(registry, "METHODS", METHODS.with_entry(noisy))  # what one entry in a package does
    locs = {loc.name: loc for loc in registry._compared([noisy])}
    assert {name: loc.seeded for name, loc in locs.items()} == {"noisy_mlp": True, "noisy_mlp_mlps": True}
    loc = locs["noisy_mlp_mlps"]  # the runner passes its seed to seeded localizations only (pipeline)
    tops = {seed: localization_scores(planted.model, planted.dataset, loc, seed=seed if loc.seeded else None).top(1)
            for seed in (0, 1)}
    assert tops == {0: [Component("mlp", 0)], 1: [Component("mlp", 1)]}
    unseeded = ScoringMethod("plain", _mlp_of_seed, ("seed",), compared=True)  # the default: as before
    assert [loc.seeded for loc in registry._compared([unseeded])] == [False, False]


def test_a_seeded_method_without_a_seed_option_is_refused():
    with pytest.raises(ValueError, match=r"scoring method 'noseed': seeded=True .*'seed' is not among its options"):
        ScoringMethod("noseed", _mlp_of_seed, ("components",), seeded=True)


# --- evaluate files and labels a suite's result by its entry's name -------------------------------------

@dataclass(frozen=True)
class ScaleConfig(ConfigBase):
    """Settings of the toy suites."""

    scale: float = 1.0


def _scaled_suite(entries: dict[str, Suite], entry_name: str):
    def run(model, task, *, original, config, baselines):
        s = config.suite_config(entries[entry_name])
        return SuiteResult("toy", (Metric("scaled", s.scale, 1),))  # the function's own label, not the entry's
    return run


def test_one_function_under_two_names_keeps_both_results(planted):
    """flat(), to_frame() and compare key metrics by SuiteResult.suite: toy_a's value was lost."""
    entries: dict[str, Suite] = {}
    a = entries["toy_a"] = Suite("toy_a", _scaled_suite(entries, "toy_a"), config_type=ScaleConfig)
    b = entries["toy_b"] = Suite("toy_b", _scaled_suite(entries, "toy_b"), config_type=ScaleConfig)
    cfg = EvalConfig(other_suites={"toy_a": {"scale": 1.0}, "toy_b": {"scale": 10.0}})
    res = evaluate(planted.model, planted.task, suites=[a, b], config=cfg)
    assert res.flat() == {"toy_a.scaled": 1.0, "toy_b.scaled": 10.0}
    assert [res[n].suite for n in ("toy_a", "toy_b")] == ["toy_a", "toy_b"]
    assert list(res.to_frame()["suite"]) == ["toy_a", "toy_b"]


def test_a_result_labelled_like_another_suite_does_not_replace_its_numbers(planted):
    def imposter(model, task, *, original, config, baselines):
        return SuiteResult("standard", (Metric("forget_accuracy", 0.123, 1),))

    res = evaluate(planted.model, planted.task, suites=["standard", Suite("mine", imposter)])
    flat = res.flat()
    assert flat["standard.forget_accuracy"] == res["standard"]["forget_accuracy"].value == 1.0
    assert flat["mine.forget_accuracy"] == 0.123 and res["mine"].suite == "mine"


# --- Suite: needs / requires ---------------------------------------------------------------------------

def test_a_required_input_must_be_among_the_needs():
    """evaluate demanded edit_result= for such a suite, then never passed it to the suite's function."""
    with pytest.raises(ValueError, match=r"suite 'upd' requires \['edit_result'\] .*add them to needs"):
        Suite("upd", _nothing, requires=(("edit_result",),))
    ok = Suite("upd", _nothing, needs=("edit_result",), requires=(("edit_result",),))
    assert ok.requires == (("edit_result",),)
    assert all({n for g in s.requires for n in g} <= set(s.needs) for s in SUITES)


@pytest.mark.parametrize("kwargs, message", [
    ({"needs": "mask"}, r"needs is a tuple of input names, got 'mask'; write needs=\('mask',\)"),
    ({"needs": ("mask",), "requires": ("mask",)}, r"requires is a tuple of groups .*write requires=\(\('mask',\),\)"),
    ({"needs": ("mask",), "requires": "mask"}, r"requires is a tuple of groups .*write requires=\(\('mask',\),\)"),
])
def test_a_bare_string_for_a_suites_inputs_is_refused(kwargs, message):
    """needs="mask" failed with "can only concatenate str"; requires=("mask",) named the inputs m, a, s, k."""
    with pytest.raises(ValueError, match=message):
        Suite("s", _nothing, **kwargs)


# --- Localization: scored or fixed, never both, never neither ------------------------------------------

@pytest.mark.parametrize("method, fixed, message", [
    (None, "all_mlp", r"fixed='all_mlp' is no fixed mask; use one of \['all_mlps', 'everything'\]"),
    (None, None, r"neither a scoring method nor a fixed mask; give method="),
    ("random", "all_mlps", r"fixed='all_mlps' takes no scores, but method='random' is given"),
])
def test_a_localization_must_be_scored_or_fixed(method, fixed, message):
    """A misspelt fixed mask failed only at selection ("got scores=None"), no method and no fixed mask was
    a bare AssertionError, and a method beside a fixed mask was ignored."""
    with pytest.raises(ValueError, match=rf"localization 'x'.*{message}"):
        Localization("x", method, budgeted=False, fixed=fixed)


def test_valid_localizations_are_built_as_before():
    assert Localization("mlps", None, budgeted=False, fixed="all_mlps").fixed == "all_mlps"
    assert Localization("r", "random").scoring is METHODS.get("random")
    assert [(loc.name, loc.fixed) for loc in LOCALIZATIONS.entries if loc.fixed] == [
        ("all_mlps", "all_mlps"), ("nonlocalized", "everything")]


# --- ScoringMethod / EditMethod: bare strings and unknown objectives ----------------------------------

@pytest.mark.parametrize("field, value", [("options", "seed"), ("required", "components")])
def test_a_bare_string_for_a_scoring_methods_options_is_refused(field, value):
    """options="seed" was accepted, and then accepts("se") was True."""
    kwargs = {"options": ("components",), field: value}
    with pytest.raises(ValueError, match=rf"scoring method 'm': {field} is a tuple .*write {field}=\('{value}',\)"):
        ScoringMethod("m", _nothing, **kwargs)
    assert ScoringMethod("m", _nothing, ["seed"]).accepts("seed")  # a list, as before


@pytest.mark.parametrize("objectives, message", [
    (("injct",), r"objectives \['injct'\] are no registered objective; known: \['inject'"),
    ("inject", r"objectives is a tuple of objective names .*write objectives=\('inject',\)"),
    ((OBJECTIVES.get("unlearn"),), r"objectives is a tuple of objective names .*write objectives=\('unlearn',\)"),
])
def test_an_edit_method_naming_no_objective_is_refused(objectives, message):
    """("injct",) was accepted, and the method then refused every objective it was meant to support."""
    with pytest.raises(ValueError, match=rf"edit method 'm': {message}"):
        EditMethod("m", _nothing, objectives)
    assert EditMethod("m", _nothing, ("inject", "unlearn")).supported_objectives() == ("inject", "unlearn")
    assert EditMethod("m", _nothing, None).supported_objectives() == OBJECTIVES.names()
    assert [e.objectives for e in EDIT_METHODS.entries] == [None, ("inject",), ("inject",), ("inject",)]


PLUGIN = '''
from dataclasses import dataclass
from factlens.editing.objectives import TrainingObjective
from factlens.editing.registry import EditMethod, Objective


@dataclass(frozen=True)
class Hinge(TrainingObjective):
    @classmethod
    def prepare(cls, model, forget_items, retain_items, *, mask, config):
        return cls()


def shrink(model, mask, task, *, objective, config, inplace):
    return None


HINGE = Objective("hinge", Hinge, doc="hinge")
SHRINK = EditMethod("shrink", shrink, ("hinge",), doc="supports the package's own objective")
'''


def test_an_edit_method_may_support_an_installed_packages_objective(tmp_path, monkeypatch):
    """The check reads the installed packages' objectives, also while the package itself is imported."""
    module = f"factlens_registry_checks_plugin_{abs(hash(str(tmp_path))) % 10**6}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "registry_checks_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: registry-checks-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[factlens.objectives]\nhinge = {module}:HINGE\n\n"
                                           f"[factlens.edit_methods]\nshrink = {module}:SHRINK\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.refresh()
    try:
        assert EDIT_METHODS.get("shrink").supported_objectives() == ("hinge",)
        assert EditMethod("mine", _nothing, ("inject", "hinge")).objectives == ("inject", "hinge")
    finally:
        sys.modules.pop(module, None)
        plugins.refresh()
