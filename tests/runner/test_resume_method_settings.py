"""A run folder records every setting of the edit methods it uses, so that resuming it with a
version whose defaults changed is refused instead of finishing the run with other settings.

``MemitConfig.norm_weight_floor`` is the case that prompted it: added with default 0.01, while
MEMIT before it wrote every non-zero dimension (a floor of 0). Folders written before the
methods' settings were recorded kept only the user's tables (``resolved.edit.methods``), so a
folder of the older version resumed its pending MEMIT units with the new default, silently.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from factlens.editing.memit import MemitConfig
from factlens.runner import RunConfig, RunDir, run_experiment
from factlens.runner.stored import upgrade_stored
from factlens.runner.executor import ConfigMismatchError
from factlens.runner.method_settings import _MIXED, finished_unit_values, method_settings_diff

pytestmark = pytest.mark.usefixtures("one_thread")

#: A quick MEMIT on the planted model (the fields given are the user's table; none changed meaning).
FAST_MEMIT = {"v_num_grad_steps": 2, "n_cov_tokens": 256, "cache_covariance": False}
UNIT = Path("runs") / "seed0" / "manual+memit.json"


def _cfg(out: Path, **kw) -> RunConfig:
    # MLPs 1-2 of the planted model's four layers: MEMIT refuses a value written after the last block
    base = dict(task="planted", model="planted", localizations=("manual",), suites=("standard",), out=str(out),
                localize_options={"manual": {"components": ["L1.mlp", "L2.mlp"]}},
                show_progress=False, methods=("memit",), edit={"methods": {"memit": dict(FAST_MEMIT)}})
    return RunConfig(**{**base, **kw})


def _with_floor(cfg: RunConfig, floor: float) -> RunConfig:
    return cfg.replace(edit={"methods": {"memit": {**FAST_MEMIT, "norm_weight_floor": floor}}})


def _as_old_record(out: Path, *, unit_floor: float | None) -> None:
    """Rewrite ``out`` as the versions before this one left it: ``resolved.edit.methods`` holds only
    the user's tables; the finished MEMIT unit ran with ``unit_floor`` (``None``: a version before
    the floor existed, whose ``memit_config`` has no such field)."""
    path = out / "run_config.json"
    rec = json.loads(path.read_text())
    rec["resolved"]["edit"]["methods"] = rec["config"]["edit"].get("methods", {})
    path.write_text(json.dumps(rec))
    unit = out / UNIT
    if unit.exists():
        r = json.loads(unit.read_text())
        r["edit"]["meta"]["memit_config"].pop("norm_weight_floor")
        if unit_floor is not None:
            r["edit"]["meta"]["memit_config"]["norm_weight_floor"] = unit_floor
        unit.write_text(json.dumps(r))


@pytest.fixture(scope="module")
def memit_folder(tmp_path_factory) -> Path:
    """A run folder with one finished MEMIT unit (seed 0), written by this version."""
    out = tmp_path_factory.mktemp("memit") / "run"
    assert run_experiment(_cfg(out), report=False).ran == ("seed0/manual+memit",)
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def test_old_memit_folder_is_refused_with_todays_floor_and_resumes_with_the_old_one(memit_folder, tmp_path):
    """A folder of a version before the floor: adding seed 1 with today's default is refused (the
    message names the setting and the option that resumes); with ``norm_weight_floor=0`` given,
    the pending unit runs with 0, as the finished one did, and the record says so."""
    out = _copy(memit_folder, tmp_path)
    _as_old_record(out, unit_floor=None)
    grow = _cfg(out, seeds=(0, 1))
    with pytest.raises(ConfigMismatchError) as e:
        run_experiment(grow, report=False)
    msg = str(e.value)
    assert "methods.memit.norm_weight_floor: 0.0 (stored) != 0.01 (now)" in msg
    assert "--edit methods.memit.norm_weight_floor=0.0" in msg and "--overwrite" in msg
    assert not (out / "runs" / "seed1").exists()  # nothing ran

    s = run_experiment(_with_floor(grow, 0.0), report=False)
    assert s.ran == ("seed1/manual+memit",) and s.skipped == ("seed0/manual+memit",)
    ran = json.loads((out / "runs" / "seed1" / "manual+memit.json").read_text())["edit"]["meta"]["memit_config"]
    assert ran["norm_weight_floor"] == 0.0
    stored = json.loads((out / "run_config.json").read_text())["resolved"]["edit"]["methods"]["memit"]
    assert stored["norm_weight_floor"] == 0.0 and stored["v_num_grad_steps"] == FAST_MEMIT["v_num_grad_steps"]
    # the record stays true: today's default is still refused, also by an invocation that leaves MEMIT out
    with pytest.raises(ConfigMismatchError, match="norm_weight_floor"):
        RunDir(out).open(grow.replace(methods=("finetune",)))


def test_old_memit_folder_without_finished_units_takes_the_old_floor(tmp_path):
    """No MEMIT unit finished: the record is read as the versions before the floor ran (0)."""
    out = tmp_path / "run"
    cfg = _cfg(out, methods=("finetune", "memit"), edit={})
    RunDir(out).open(cfg)
    _as_old_record(out, unit_floor=None)
    with pytest.raises(ConfigMismatchError, match=r"methods\.memit\.norm_weight_floor: 0\.0 \(stored\) != 0\.01"):
        RunDir(out).open(cfg)
    RunDir(out).open(cfg.replace(edit={"methods.memit.norm_weight_floor": 0}))


def test_old_folder_whose_memit_units_ran_with_the_floor_resumes_with_it(memit_folder, tmp_path):
    """A folder written after the floor was added but before the settings were recorded: its
    finished units say which floor they ran with (0.01), so today's default resumes it and 0 does not."""
    out = _copy(memit_folder, tmp_path)
    _as_old_record(out, unit_floor=0.01)
    assert upgrade_stored(json.loads((out / "run_config.json").read_text()),
                          RunDir(out).run_files())["resolved"]["edit"]["methods"]["memit"]["norm_weight_floor"] == 0.01
    with pytest.raises(ConfigMismatchError, match=r"norm_weight_floor: 0\.01 \(stored\) != 0\.0 \(now\)"):
        RunDir(out).open(_with_floor(_cfg(out), 0.0))
    RunDir(out).open(_cfg(out, seeds=(0, 1)))


def test_a_new_record_holds_every_memit_setting(tmp_path):
    """``run_config.json`` records all of MEMIT's fields with their defaults (norm_weight_floor
    included), with the run's seed and covariance text; fine-tuning has no table of its own."""
    text = tmp_path / "general.txt"
    text.write_text("Some general text.\n")
    out = tmp_path / "run"
    cfg = _cfg(out, methods=("finetune", "memit"), edit={"methods.memit.v_lr": 0.25}, eval={"text.source": str(text)})
    RunDir(out).open(cfg)
    methods = json.loads((out / "run_config.json").read_text())["resolved"]["edit"]["methods"]
    assert list(methods) == ["memit"]
    memit = methods["memit"]
    assert set(memit) == {f.name for f in dataclasses.fields(MemitConfig)}
    assert memit["norm_weight_floor"] == MemitConfig().norm_weight_floor == 0.01
    assert (memit["v_lr"], memit["text_source"], memit["seed"]) == (0.25, str(text), 0)
    assert memit == cfg.resolved()["edit"]["methods"]["memit"]
    assert RunDir(out).open(cfg) == cfg  # a record of this version resumes as is


def test_old_finetune_folder_still_resumes(tmp_path):
    """A fine-tuning folder of the versions before (only the user's tables, here one of a method
    the run does not use) resumes, nothing reruns, and adding MEMIT to it is no difference."""
    out = tmp_path / "run"
    cfg = RunConfig(task="planted", model="planted", localizations=("all_mlps",), suites=("standard",), out=str(out),
                    show_progress=False, edit={"steps": 1, "methods": {"rome": {"v_lr": 1.0}}})
    assert run_experiment(cfg, report=False).ran == ("seed0/all_mlps",)
    _as_old_record(out, unit_floor=None)
    assert json.loads((out / "run_config.json").read_text())["resolved"]["edit"]["methods"] == {"rome": {"v_lr": 1.0}}
    again = run_experiment(cfg, report=False)
    assert again.ran == () and again.skipped == ("seed0/all_mlps",)
    RunDir(out).open(cfg.replace(methods=("finetune", "memit")))


def test_units_that_disagree_match_no_run(tmp_path):
    """A folder already resumed across the change (one unit without the floor, one with 0.01) is
    refused whatever the floor, and the message offers no value to resume with."""
    for seed, floor in ((0, None), (1, 0.01)):
        p = tmp_path / f"seed{seed}" / "flu+memit.json"
        p.parent.mkdir()
        cfg = {} if floor is None else {"norm_weight_floor": floor}
        rec = {"kind": "factlens.run", "unit": {"method": "memit"}, "edit": {"meta": {"memit_config": cfg}}}
        p.write_text(json.dumps(rec))
    (tmp_path / "seed0" / "flu.json").write_text("not read: fine-tuning has no setting that changed")
    values = finished_unit_values(sorted(tmp_path.glob("seed*/*.json")))
    assert values == {"memit": {"norm_weight_floor": _MIXED + "0.0, 0.01"}}
    for floor in (0.0, 0.01):
        lines, flags = method_settings_diff(values, {"memit": {"norm_weight_floor": floor}})
        assert len(lines) == 1 and flags == []


# -- the key-covariance text of ROME and MEMIT (ae244d2 started passing --text-source to it) ------
@pytest.fixture(scope="module")
def memit_text_folder(tmp_path_factory) -> Path:
    """A run folder with a general-text file (``--text-source``) and one finished MEMIT unit."""
    root = tmp_path_factory.mktemp("memit_text")
    text = root / "text.txt"
    text.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog near river {i}. " * 6
                                for i in range(40)))
    out = root / "run"
    assert run_experiment(_cfg(out, eval={"text.source": str(text)}), report=False).ran == ("seed0/manual+memit",)
    return out


def _cfg_of(out: Path) -> RunConfig:
    rec = json.loads((out / "run_config.json").read_text())
    return _cfg(out, eval={"text.source": rec["resolved"]["eval"]["text"]["source"]})


def _unit_text_source(out: Path, value) -> None:
    unit = out / UNIT
    r = json.loads(unit.read_text())
    r["edit"]["meta"]["memit_config"]["text_source"] = value
    unit.write_text(json.dumps(r))


def test_old_folder_whose_memit_covariance_used_the_builtin_text_is_refused(memit_text_folder, tmp_path):
    """A folder of the versions before --text-source reached MEMIT (its unit estimated the key
    covariance on the built-in text, and the record held only the user's tables): adding a seed
    now, when MEMIT would read the run's text, is refused, the message says why, and it offers no
    flag that cannot reproduce the old behaviour."""
    out = _copy(memit_text_folder, tmp_path)
    _as_old_record(out, unit_floor=0.01)
    _unit_text_source(out, None)
    up = upgrade_stored(json.loads((out / "run_config.json").read_text()), RunDir(out).run_files())
    assert up["resolved"]["edit"]["methods"]["memit"]["text_source"] is None
    with pytest.raises(ConfigMismatchError) as e:
        run_experiment(_cfg_of(out).replace(seeds=(0, 1)), report=False)
    msg = str(e.value)
    assert "methods.memit.text_source: None (stored)" in msg and "built-in text" in msg
    assert "--edit methods.memit.text_source" not in msg
    assert not (out / "runs" / "seed1").exists()


def test_old_folder_whose_memit_covariance_used_the_run_text_resumes(memit_text_folder, tmp_path):
    """The same record written after --text-source reached MEMIT (the unit says it read the run's
    text) resumes; so does an old record with no finished MEMIT unit (no unit ran with another text)."""
    out = _copy(memit_text_folder, tmp_path)
    _as_old_record(out, unit_floor=0.01)
    text = _cfg_of(out).resolved()["eval"]["text"]["source"]
    grow = _cfg_of(out).replace(seeds=(0, 1))
    assert RunDir(out).open(grow) == grow  # accepted, as asked
    rec = json.loads((out / "run_config.json").read_text())
    assert rec["config"]["seeds"] == [0, 1]  # the folder now records the added seed ...
    assert rec["resolved"]["edit"]["methods"]["memit"]["text_source"] == text  # ... and the text MEMIT reads
    bare = tmp_path / "bare"
    shutil.copytree(memit_text_folder, bare)
    _as_old_record(bare, unit_floor=0.01)
    (bare / UNIT).unlink()
    grow = _with_floor(_cfg_of(bare).replace(seeds=(0, 1)), 0.0)  # (the floor: none finished, the old 0)
    assert RunDir(bare).open(grow) == grow
    rec = json.loads((bare / "run_config.json").read_text())
    assert rec["config"]["seeds"] == [0, 1] and rec["resolved"]["edit"]["methods"]["memit"]["text_source"] == text


def test_an_alphaedit_folder_from_before_protect_bos_resumes_with_it_off():
    """A folder whose AlphaEdit units ran before protect_bos existed ran with the BOS key in the null
    space: its stored table must read protect_bos=False, not today's True."""
    from factlens.editing import EditConfig
    from factlens.runner.method_settings import method_settings_diff, resolved_method_settings, upgrade_method_settings

    old = {**EditConfig().to_dict(), "methods": {"alphaedit": {"l2": 10.0}}}
    up = upgrade_method_settings(old, None, ["alphaedit"])["methods"]
    assert up["alphaedit"]["protect_bos"] is False and up["alphaedit"]["l2"] == 10.0
    lines, flags = method_settings_diff(up, resolved_method_settings(EditConfig(), ["alphaedit"]))
    assert lines == ["methods.alphaedit.protect_bos: False (stored) != True (now)"]
    assert flags == ["--edit methods.alphaedit.protect_bos=false"]
