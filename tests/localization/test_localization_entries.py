"""Named localizations of one's own: checked when built (or when an installed package's load), and
their scores named as ``localize`` names them.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

import factlens
from factlens import plugins
from factlens.components import Component
from factlens.localization import LOCALIZATIONS, Localization, ScoringMethod, localization_scores
from factlens.localization.controls import manual_scores

pytestmark = pytest.mark.usefixtures("one_thread")


def _last_mlp(model, dataset, *, seed=0):
    return manual_scores(model, dataset, components=[Component("mlp", model.cfg.n_layers - 1)])


def _no_seed(model, dataset, *, batch_size=8):
    return manual_scores(model, dataset, components=[Component("mlp", model.cfg.n_layers - 1)])


def test_a_seeded_localization_of_a_method_without_a_seed_option_is_refused_when_built():
    """It was accepted and failed inside the job: "unknown option(s) ['seed']"."""
    method = ScoringMethod("no_seed_of_mine", _no_seed, ("batch_size",))
    with pytest.raises(ValueError, match=r"localization 'mine': seeded=True passes the run's seed as seed=, but its "
                                         r"scoring method 'no_seed_of_mine' has no 'seed' option"):
        Localization("mine", method, budgeted=False, seeded=True)
    assert Localization("mine", method, budgeted=False).seeded is False  # unseeded: fine


def test_localization_scores_name_the_method_as_localize_does(planted):
    """A method of one's own built on ``manual_scores`` recorded ``scores.method == "manual"`` in runs,
    while ``localize`` gave its own name."""
    method = ScoringMethod("last_mlp_of_mine", _last_mlp, ("seed",))
    loc = Localization("last_mlp_top_of_mine", method, budgeted=False, seeded=True)
    scores = localization_scores(planted.model, planted.dataset, loc)
    assert (scores.method, scores.name) == ("last_mlp_of_mine", "last_mlp_top_of_mine")
    assert factlens.localize(planted.model, planted.dataset, method=method).method == scores.method
    builtin = localization_scores(planted.model, planted.dataset, "random_mlps", seed=1)
    assert (builtin.method, builtin.name) == ("random", "random_mlps")


SOURCE = '''
from factlens.components import Component
from factlens.localization import Localization, ScoringMethod
from factlens.localization.controls import manual_scores


def no_seed(model, dataset, *, batch_size=8):
    return manual_scores(model, dataset, components=[Component("mlp", model.cfg.n_layers - 1)])


NOSEED = ScoringMethod("noseed", no_seed, ("batch_size",))
SEEDLOC = Localization("seedloc", "noseed", budgeted=False, seeded=True)
BADLOC = Localization("badloc", "nonexistent_method", budgeted=False)
GOODLOC = Localization("goodloc", "noseed", budgeted=False)
'''


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(entry_points)``: a distribution ``demo-plugin`` 0.1 with the module above (as in
    tests/test_plugins.py)."""
    made = []

    def _install(groups: dict[str, str]) -> None:
        module = f"factlens_demo_loc_{len(made)}_{abs(hash(str(tmp_path))) % 10**6}"
        root = tmp_path / f"site{len(made)}"
        root.mkdir()
        (root / f"{module}.py").write_text(textwrap.dedent(SOURCE))
        info = root / "demo_plugin-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("".join(f"[{g}]\n{line.format(m=module)}\n\n" for g, line in groups.items()))
        monkeypatch.syspath_prepend(str(root))
        made.append(module)
        plugins.refresh()

    yield _install
    for module in made:
        sys.modules.pop(module, None)
    plugins.refresh()


@pytest.mark.parametrize("entry, message", [
    ("seedloc", r"localization 'seedloc': seeded=True passes the run's seed as seed=, but its scoring method 'noseed' "
                r"has no 'seed' option"),
    ("badloc", r"localization 'badloc': method='nonexistent_method' is no registered scoring method"),
])
def test_an_installed_localization_that_cannot_run_is_refused_when_the_plugins_load(install, entry, message):
    """Both loaded: the seeded one failed inside the job, the other only when a run selected it."""
    install({"factlens.localization_methods": "noseed = {m}:NOSEED",
             "factlens.localizations": f"{entry} = {{m}}:{entry.upper()}"})
    with pytest.raises(plugins.PluginError, match=message) as e:
        LOCALIZATIONS.names()
    assert f"entry point {entry} = " in str(e.value) and "demo-plugin 0.1" in str(e.value)


def test_an_installed_localization_of_an_installed_method_loads(install):
    install({"factlens.localization_methods": "noseed = {m}:NOSEED", "factlens.localizations": "goodloc = {m}:GOODLOC"})
    assert LOCALIZATIONS.get("goodloc").scoring.name == "noseed"
