"""Resuming a run folder after a plugin package that gives its entries changed version is refused.

Before, ``factlens run`` resumed such a folder without a word: seed 0 computed with mypkg 0.3,
seed 1 with 0.4, and ``run_config.json`` then named only 0.4. A changed setting is refused on
resume; so is a changed version of the code that computes the stored units.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest

from factlens import plugins
from factlens.runner import RunConfig
from factlens.runner.run_dir import ConfigMismatchError, RunDir

PLUGIN = '''
from factlens.components import Component
from factlens.localization import ScoringMethod
from factlens.localization.controls import manual_scores


def last_mlp(model, dataset, *, seed=0):
    return manual_scores(model, dataset, components=[Component("mlp", model.cfg.n_layers - 1)])


METHOD = ScoringMethod("{name}", last_mlp, ("seed",), "the last MLP", compared=True)
'''

METHOD_OF = {"demo-resume": "last_mlp", "other-plugin": "other_mlp"}


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(version, dist=...)``: that distribution at ``version`` (replacing the one installed),
    giving the scoring method ``METHOD_OF[dist]``."""
    roots: dict[str, str] = {}
    tag = abs(hash(str(tmp_path))) % 10**6

    def _install(version: str, *, dist: str = "demo-resume") -> None:
        module = f"factlens_resume_{dist.replace('-', '_')}_{tag}"
        root = tmp_path / f"{dist}-{version}"
        root.mkdir()
        (root / f"{module}.py").write_text(textwrap.dedent(PLUGIN.format(name=METHOD_OF[dist])))
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        entry = f"{METHOD_OF[dist]} = {module}:METHOD"
        (info / "entry_points.txt").write_text(f"[factlens.localization_methods]\n{entry}\n")
        if dist in roots:
            sys.path.remove(roots[dist])
        sys.modules.pop(module, None)
        monkeypatch.syspath_prepend(str(root))
        roots[dist] = str(root)
        importlib.invalidate_caches()
        plugins.refresh()

    yield _install
    for dist, root in roots.items():
        sys.modules.pop(f"factlens_resume_{dist.replace('-', '_')}_{tag}", None)
        if root in sys.path:
            sys.path.remove(root)
    plugins.refresh()


def _config(tmp_path, localizations=("last_mlp_mlps",), seeds=(0,)) -> RunConfig:
    return RunConfig(task="planted", model="planted", localizations=localizations, seeds=seeds,
                     suites=("standard",), out=str(tmp_path / "run"), show_progress=False)


def test_a_resume_after_the_plugin_of_its_entries_changed_version_is_refused(install, tmp_path):
    install("0.3")
    rd = RunDir(tmp_path / "run")
    rd.open(_config(tmp_path))
    rd.open(_config(tmp_path, seeds=(0, 1)))  # the same version: resumes (and adds a seed)
    install("0.4")
    with pytest.raises(ConfigMismatchError) as err:
        rd.open(_config(tmp_path, seeds=(0, 1)))
    msg = str(err.value)
    assert ("plugin package demo-resume (gives the localization method 'last_mlp'): '0.3' (stored) != '0.4' "
            "(installed now)") in msg
    assert "pip install 'demo-resume==0.3'" in msg and "--overwrite" in msg and "another --out" in msg
    rd.open(_config(tmp_path, seeds=(0, 1)), overwrite=True)  # the way to start over with 0.4
    rd.drop_set_aside()
    rd.open(_config(tmp_path, seeds=(0, 1)))  # and the folder now holds 0.4's results only


def test_another_packages_upgrade_or_a_plugin_the_stored_units_did_not_use_is_no_difference(install, tmp_path):
    install("0.3")
    install("1.0", dist="other-plugin")
    rd = RunDir(tmp_path / "run")
    rd.open(_config(tmp_path, localizations=("random",)))  # built-ins only
    stored = json.loads(rd.config_path.read_text())["versions"]["plugins"]
    assert stored == {"demo-resume": "0.3", "other-plugin": "1.0"}
    install("0.4")
    install("2.0", dist="other-plugin")
    # the plugin's localization added to the folder: its new units are all computed with 0.4
    merged = rd.open(_config(tmp_path, localizations=("last_mlp_mlps",)))
    assert merged.localizations == ("random", "last_mlp_mlps")
