"""Methods of other installed packages join the registries through entry points (factlens.plugins).

The tests install a real (tiny) distribution: a ``*.dist-info`` folder with ``entry_points.txt``
beside its module on ``sys.path``, which ``importlib.metadata`` finds as it finds a pip-installed
package.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

import factlens
from factlens import plugins
from factlens.editing.registry import EDIT_METHODS, OBJECTIVES
from factlens.evaluation import SUITES
from factlens.localization import LOCALIZATIONS, METHODS

PLUGIN = '''
from dataclasses import dataclass

import torch

from factlens.components import Component
from factlens.editing.objectives import TrainingObjective
from factlens.editing.objectives.base import answer_logprobs
from factlens.editing.registry import Objective
from factlens.evaluation import Suite, SuiteResult
from factlens.evaluation.result import Metric
from factlens.localization import ScoringMethod
from factlens.localization.controls import manual_scores


def last_mlp(model, dataset, *, seed=0):
    return manual_scores(model, dataset, components=[Component("mlp", model.cfg.n_layers - 1)])


def run_count(model, task, *, original, config, baselines):
    return SuiteResult("count", (Metric("n_forget", float(len(task.forget)), len(task.forget)),))


@dataclass(frozen=True)
class Hinge(TrainingObjective):
    @classmethod
    def prepare(cls, model, forget_items, retain_items, *, mask, config):
        return cls()

    def losses(self, model, forget_batch, retain_batch):
        logp_f, _, logp_r = answer_logprobs(model, forget_batch, retain_batch)
        retain = -logp_r.mean() if logp_r.numel() else logp_r.new_zeros(())
        return torch.relu(logp_f + 1.0).mean(), retain


LAST_MLP = ScoringMethod("last_mlp", last_mlp, ("seed",), "the last MLP", compared=True)
COUNT = Suite("count", run_count, doc="how many forget facts")
HINGE = Objective("hinge", Hinge, doc="hinge on log p(answer)")
NOT_AN_ENTRY = "last_mlp"
'''

GOOD = {"factlens.localization_methods": "last_mlp = {m}:LAST_MLP", "factlens.suites": "count = {m}:COUNT",
        "factlens.objectives": "hinge = {m}:HINGE"}


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(entry_points)`` makes a distribution ``demo-plugin`` 0.1 importable, with the
    module above and the given ``{group: "name = module:attr"}`` lines."""
    made = []

    def _install(groups: dict[str, str], *, source: str = PLUGIN, dist: str = "demo-plugin") -> str:
        module = f"factlens_demo_plugin_{len(made)}_{abs(hash(str(tmp_path))) % 10**6}"
        root = tmp_path / f"site{len(made)}"
        (root / f"{module}.py").parent.mkdir(parents=True)
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("".join(f"[{g}]\n{line.format(m=module)}\n\n" for g, line in groups.items()))
        monkeypatch.syspath_prepend(str(root))
        made.append(module)
        plugins.refresh()
        return module

    yield _install
    for module in made:
        sys.modules.pop(module, None)
    plugins.refresh()


def test_an_installed_package_adds_methods_suites_and_objectives_by_name(install, planted):
    """Before entry points, a method reached the runner only by an entry in factlens's own registries."""
    assert "last_mlp" not in METHODS and "count" not in SUITES
    install(GOOD)
    assert METHODS.get("last_mlp").compared and "count" in SUITES and OBJECTIVES.get("hinge").name == "hinge"
    assert {"last_mlp", "last_mlp_mlps"} <= set(LOCALIZATIONS.names())  # compared=True: the runner's two
    assert METHODS.names()[: len(METHODS.entries)] == tuple(e.name for e in METHODS.entries)  # built-ins first
    assert "hinge" in EDIT_METHODS.get("finetune").supported_objectives()  # fine-tuning trains on any objective
    assert "hinge" not in EDIT_METHODS.get("rome").supported_objectives()
    scores = factlens.localize(planted.model, planted.dataset, method="last_mlp")
    assert scores.method == "last_mlp" and scores.to_mask(top_k=1).labels == [f"L{planted.model.cfg.n_layers - 1}.mlp"]
    assert plugins.plugin_versions() == {"demo-plugin": "0.1"}


def test_factlens_run_runs_a_plugins_localization_suite_and_objective(install, planted, tmp_path):
    from factlens.runner.cli import main

    install(GOOD)
    out = tmp_path / "run"
    # two worker processes: they read the same installed packages' entry points
    assert main(["run", "planted", "--model", "planted", "--out", str(out), "--localizations", "last_mlp_mlps,last_mlp",
                 "--workers", "2",
                 "--objectives", "hinge", "--suites", "standard,count", "--no-progress", "--no-report",
                 "--edit", "steps=1"]) == 0
    rec = json.loads((out / "runs" / "seed0" / "last_mlp_mlps+hinge.json").read_text())  # finetune: the default
    assert rec["mask_labels"] == [f"L{planted.model.cfg.n_layers - 1}.mlp"]
    forget = next(m for m in rec["eval"]["suites"]["standard"]["metrics"] if m["name"] == "forget_accuracy")
    assert rec["eval"]["suites"]["count"]["metrics"][0]["value"] == forget["n"] > 0
    assert json.loads((out / "runs" / "seed0" / "last_mlp+hinge.json").read_text())["budgeted"]
    assert rec["edit"]["config"]["steps"] == 1 and rec["versions"]["plugins"] == {"demo-plugin": "0.1"}
    assert json.loads((out / "run_config.json").read_text())["versions"]["plugins"] == {"demo-plugin": "0.1"}
    from factlens.runner.report_markdown import markdown_summary

    md = markdown_summary(out)  # the plugin's suite has its table in the markdown report
    assert "### count" in md and any(l.startswith("| n_forget |") for l in md.splitlines())


@pytest.mark.parametrize("groups, message", [
    ({"factlens.suites": "count = {m}:LAST_MLP"}, r"gives a ScoringMethod; entries of 'factlens.suites' must be Suite"),
    ({"factlens.suites": "counting = {m}:COUNT"}, r"gives the evaluation suite 'count'; name the entry point after"),
    ({"factlens.localization_methods": "last = {m}:NOT_AN_ENTRY"}, r"gives a str"),
    ({"factlens.objectives": "hinge = {m}:MISSING"}, r"could not be loaded: AttributeError"),
])
def test_a_plugin_that_cannot_be_used_as_it_is_is_a_clear_error_naming_its_package(install, groups, message):
    install(groups)
    registry = {"factlens.suites": SUITES, "factlens.localization_methods": METHODS,
                "factlens.objectives": OBJECTIVES}[next(iter(groups))]
    with pytest.raises(plugins.PluginError, match=message) as e:
        registry.names()
    assert "demo-plugin 0.1" in str(e.value)


def test_a_plugin_cannot_replace_a_built_in_method_or_another_plugins(install):
    """A package registering "flu" would silently change what every run called flu measured."""
    source = PLUGIN + "\nFLU = ScoringMethod('flu', last_mlp, ('seed',))\nALL = ScoringMethod('all', last_mlp, " \
                      "('seed',), compared=True)\n"
    install({"factlens.localization_methods": "flu = {m}:FLU"}, source=source)
    assert METHODS.get("flu") is METHODS.entries[[e.name for e in METHODS.entries].index("flu")]  # never the plugin's
    with pytest.raises(plugins.PluginError, match=r"registers the localization method 'flu', which factlens already has"):
        METHODS.names()
    plugins.refresh()
    install({"factlens.localization_methods": "all = {m}:ALL"}, source=source)  # gives all, all_mlps (built in)
    with pytest.raises(plugins.PluginError, match=r"gives the localizations \['all_mlps'\], which already exist"):
        LOCALIZATIONS.names()


def test_two_packages_registering_one_name_are_refused(install):
    install({"factlens.suites": "count = {m}:COUNT"})
    install({"factlens.suites": "count = {m}:COUNT"}, dist="other-plugin")
    with pytest.raises(plugins.PluginError, match=r"both register the evaluation suite 'count'") as e:
        SUITES.get("count")
    assert "demo-plugin 0.1" in str(e.value) and "other-plugin 0.1" in str(e.value)


def test_with_entry_keeps_the_installed_entries(install):
    from factlens.localization import ScoringMethod
    from factlens.localization.controls import manual_scores

    install(GOOD)
    extended = METHODS.with_entry(ScoringMethod("other", manual_scores, ("components",)))
    assert {"last_mlp", "other"} <= set(extended.names())


def test_an_entry_of_another_registry_is_refused_where_a_name_goes():
    """``LOCALIZATIONS.get(<ScoringMethod>)`` returned it, and ``localization_mask`` failed later with
    ``AttributeError: 'ScoringMethod' object has no attribute 'budgeted'``."""
    with pytest.raises(TypeError, match=r"a localization is a name or a Localization entry, got a ScoringMethod"):
        LOCALIZATIONS.get(METHODS.get("random"))
    assert METHODS.get(METHODS.get("random")) is METHODS.get("random")


def test_two_compared_methods_whose_localizations_collide_are_refused(install):
    """Methods "last_mlp" and "last_mlp_mlps" both gave a localization "last_mlp_mlps"; the name then
    ran the first method."""
    source = PLUGIN + "\nLAST_MLPS = ScoringMethod('last_mlp_mlps', last_mlp, ('seed',), compared=True)\n"
    install({"factlens.localization_methods": "last_mlp = {m}:LAST_MLP\nlast_mlp_mlps = {m}:LAST_MLPS"},
            source=source)
    with pytest.raises(plugins.PluginError, match=r"gives the localizations \['last_mlp_mlps'\], which already exist"):
        LOCALIZATIONS.get("last_mlp_mlps")


def test_a_broken_plugin_is_a_clear_exit_2_of_every_command(install, capsys):
    from factlens.runner.cli import main

    install({"factlens.objectives": "hinge = {m}:MISSING"})
    assert main(["run", "planted", "--model", "planted", "--out", "x"]) == 2
    assert "could not be loaded" in capsys.readouterr().err


def test_a_plugin_may_wrap_a_built_in_entry_while_it_is_imported(install, planted):
    """Looking up a built-in name read the plugins, whose import was under way: a nested PluginError."""
    source = PLUGIN + (
        "\nfrom dataclasses import replace\nfrom factlens.localization import METHODS\n"
        "WRAPPED = replace(METHODS.get('random'), name='random2', compared=False)\n")
    install({"factlens.localization_methods": "random2 = {m}:WRAPPED"}, source=source)
    assert METHODS.get("random2").fn == METHODS.get("random").fn


def test_a_broken_plugin_localization_is_a_message_of_the_cli_not_an_import_error(install, tmp_path):
    """``factlens.runner.pipeline`` read every localization, plugins' too, at import (``UNBUDGETED``): an
    installed localization that a load check refuses (here: one naming no registered scoring method) made
    importing the runner raise, so every ``factlens`` command ended in a traceback instead of the message."""
    import os
    import subprocess

    source = PLUGIN + '\nfrom factlens.localization import Localization\nBAD = Localization("bad_loc", "no_such_method")\n'
    install({"factlens.localizations": "bad_loc = {m}:BAD"}, source=source)
    with pytest.raises(plugins.PluginError, match="no_such_method"):
        LOCALIZATIONS.names()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site0"), *sys.path])}
    code = "import factlens.runner.pipeline as p; print(sorted(p.UNBUDGETED))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "flu" in out.stdout and "bad_loc" not in out.stdout
