"""factlens.config: one rule for every config (unknown keys rejected at any level), nested tables,
renamed keys, and the validated Overrides the runner keeps."""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import dataclass

import pytest

from factlens.config import ConfigBase, Overrides, type_ok


@dataclass(frozen=True)
class Inner(ConfigBase):
    steps: int = 3
    names: tuple[str, ...] = ("a",)


@dataclass(frozen=True)
class Outer(ConfigBase):
    _renamed = {"inner_steps": "inner.steps"}

    lr: float = 0.1
    inner: Inner = Inner()

    def __post_init__(self) -> None:
        self._nest_tables()


@dataclass(frozen=True)
class Formats(ConfigBase):
    formats: tuple[str, ...] | None = None


@dataclass(frozen=True)
class WithFormats(ConfigBase):
    """A field that became a nested config under its old name (as ``EvalConfig.formats``)."""

    _renamed = {"formats": "formats.formats"}

    formats: Formats = Formats()


def test_nested_round_trip_and_json():
    c = Outer(lr=0.5, inner=Inner(steps=7, names=("x", "y")))
    d = c.to_dict()
    assert d == {"lr": 0.5, "inner": {"steps": 7, "names": ["x", "y"]}}
    assert Outer.from_dict(json.loads(json.dumps(d))) == c
    assert Outer.from_dict({"inner": {"steps": 9}}) == Outer(inner=Inner(steps=9))  # left-out keys: defaults


def test_unknown_keys_rejected_at_every_level_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown Outer fields \['lrr'\]; valid fields: \['inner', 'lr'\]"):
        Outer.from_dict({"lrr": 1})
    with pytest.raises(ValueError, match=r"unknown Inner fields \['step'\] \(in Outer.inner\); valid fields: "
                                         r"\['names', 'steps'\]"):
        Outer.from_dict({"inner": {"step": 1}})
    with pytest.raises(ValueError, match=r"unknown Inner fields \['step'\] \(in Outer.inner\)"):
        Outer(lr=1.0).override({"inner.step": 1})
    with pytest.raises(ValueError, match=r"Outer.inner takes a table of Inner fields, got 5"):
        Outer.from_dict({"inner": 5})
    with pytest.raises(ValueError, match="unknown Outer fields"):
        Outer().replace(bogus=1)


def test_constructor_takes_tables_for_nested_configs_and_refuses_other_types():
    assert Outer(inner={"steps": 4}).inner == Inner(steps=4)
    with pytest.raises(TypeError, match=r"Outer.inner must be a Inner \(or a table of its fields"):
        Outer(inner=4)
    with pytest.raises(ValueError, match="unknown Inner fields"):
        Outer(inner={"nope": 1})


def test_override_merges_partial_tables_and_dotted_keys():
    c = Outer(inner=Inner(steps=5, names=("q",)))
    assert c.override({"inner": {"steps": 6}}) == Outer(inner=Inner(steps=6, names=("q",)))  # names kept
    assert c.override({"inner.names": ["r", "s"]}).inner.names == ("r", "s")  # lists become tuples
    assert c.replace(inner={"steps": 6}).inner.names == ("a",)  # replace: the whole table, defaults for the rest
    # later keys win; a table merges into an earlier one
    assert Outer.normalize({"inner.steps": 1, "inner": {"names": ["z"]}, "lr": 2}) == {
        "inner": {"steps": 1, "names": ["z"]}, "lr": 2}


def test_renamed_keys_map_with_a_deprecation_warning():
    with pytest.warns(FutureWarning, match=r"'inner_steps' is deprecated; it is now 'inner.steps'"):
        c = Outer.from_dict({"inner_steps": 8})
    assert c == Outer(inner=Inner(steps=8))
    # a renamed key that is also a nested field's name: a table is the new form, anything else the old one
    with pytest.warns(FutureWarning):
        assert WithFormats.from_dict({"formats": ["m"]}).formats == Formats(formats=("m",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert WithFormats.from_dict({"formats": {"formats": ["m"]}}).formats == Formats(formats=("m",))
    # keyword arguments (code) are not mapped: the error says where the field went
    with pytest.raises(ValueError, match=r"moved: inner_steps -> inner.steps"):
        Outer().replace(inner_steps=1)


def test_overrides_validate_keys_and_types_and_read_like_a_dict():
    o = Overrides(Outer, {"inner.steps": 4, "lr": 1}, label="eval")
    assert o == {"inner": {"steps": 4}, "lr": 1} and dict(o) == {"inner": {"steps": 4}, "lr": 1}
    assert o.get_path("inner.steps") == 4 and o.get_path("inner.names") is None and o.get_path("x.y", 0) == 0
    o["inner"]["steps"] = 99  # a copy: the overrides cannot be changed from outside
    assert o.get_path("inner.steps") == 4
    base = Outer(inner=Inner(names=("k",)))
    assert o.apply(base) == Outer(lr=1, inner=Inner(steps=4, names=("k",)))
    assert o.merged({"inner": {"names": ["n"]}}).to_dict() == {"inner": {"steps": 4, "names": ["n"]}, "lr": 1}
    assert pickle.loads(pickle.dumps(o)) == o and Overrides(Outer, o) == o
    assert Overrides(Outer, Outer(lr=2.0)).to_dict() == Outer(lr=2.0).to_dict()  # an instance: all its fields
    with pytest.raises(ValueError, match=r"eval option inner.steps='x' has the wrong type \(str\); Inner.steps takes "
                                         r"int \(default 3\)"):
        Overrides(Outer, {"inner": {"steps": "x"}}, label="eval")
    with pytest.raises(ValueError, match="unknown Inner fields"):
        Overrides(Outer, {"inner.nope": 1})
    with pytest.raises(ValueError, match="must be a table/mapping"):
        Overrides(Outer, [1, 2])
    with pytest.raises(TypeError, match="Inner given for Outer"):
        Overrides(Outer, Inner())


def test_type_ok():
    assert type_ok(1, float) and not type_ok("1", float) and not type_ok(True, int)
    assert type_ok(None, int | None) and type_ok(["a", "b"], tuple[str, ...]) and type_ok("a", tuple[str, ...])
    assert not type_ok([1, "a"], tuple[int, ...])


def test_eval_configs_other_suites_cannot_be_changed_in_place():
    """``cfg.other_suites["logit_lens"]["top_k"] = "five"`` (and a table for no suite) passed on a frozen
    EvalConfig, values its constructor refuses; the tables are read-only copies that still load back
    equal from JSON and pickle, and ``to_dict`` gives plain tables."""
    from factlens.evaluation import EvalConfig

    cfg = EvalConfig(other_suites={"logit_lens": {"top_k": 5, "layers": [2, 3]}})
    with pytest.raises(TypeError, match="EvalConfig.other_suites is read-only"):
        cfg.other_suites["logit_lens"]["top_k"] = "five"
    with pytest.raises(TypeError, match="read-only"):
        cfg.other_suites["no_such_suite"] = {"x": 1}
    assert cfg.other_suites == {"logit_lens": {"top_k": 5, "layers": (2, 3)}}
    d = cfg.to_dict()
    assert d["other_suites"] == {"logit_lens": {"top_k": 5, "layers": [2, 3]}} and type(d["other_suites"]) is dict
    assert EvalConfig.from_dict(json.loads(json.dumps(d))) == cfg and pickle.loads(pickle.dumps(cfg)) == cfg
    assert cfg.override({"other_suites.logit_lens.top_k": 3}).suite_config("logit_lens").top_k == 3
    assert cfg.suite_config("logit_lens").layers == (2, 3)


def test_check_numbers_refuses_a_bool_field_that_is_no_bool():
    """``--edit methods.alphaedit.protect_bos=False`` gives the string "False" (not JSON), which a bool
    field took and Python's truth test read as *true*; EditConfig.checkpoint took it as well."""
    import numpy as np

    from factlens.config import check_numbers
    from factlens.editing import EditConfig

    @dataclass(frozen=True)
    class Flags:
        flag: bool = True
        maybe: bool | None = None

    for bad in ("False", "false", 0, 1, None):
        with pytest.raises(TypeError, match=r"Flags.flag must be true or false, got .*; write true or false "
                                            r"\(lower case in TOML, JSON and --edit/--eval KEY=VALUE options"):
            check_numbers(Flags(flag=bad))
    with pytest.raises(TypeError, match=r"Flags.maybe must be true or false, got 'no' \(str\)"):
        check_numbers(Flags(maybe="no"))
    for ok in (Flags(), Flags(flag=False, maybe=True), Flags(flag=np.bool_(False), maybe=np.True_)):
        check_numbers(ok)  # raises nothing
    with pytest.raises(TypeError, match="EditConfig.checkpoint must be true or false, got 'False'"):
        EditConfig(checkpoint="False")
    assert EditConfig(checkpoint=True).checkpoint is True
    assert EditConfig(checkpoint=np.True_).checkpoint is True  # numpy's is stored as Python's: JSON writes it


def test_every_config_that_checks_its_numbers_constructs_with_its_defaults():
    """The bool check applies to every config calling check_numbers: their defaults must pass it."""
    import importlib

    names = {"factlens.editing.config": ["EditConfig"], "factlens.editing.weight_mask": None,
             "factlens.editing.rome": ["RomeConfig"], "factlens.editing.memit": ["MemitConfig"],
             "factlens.editing.alphaedit": ["AlphaEditConfig"], "factlens.evaluation.config": None,
             "factlens.evaluation.soft_prompts": None, "factlens.evaluation.direction_ablation": None,
             "factlens.evaluation.relearning": None, "factlens.evaluation.probes": None,
             "factlens.evaluation.logit_lens": None, "factlens.evaluation.quantization": None,
             "factlens.evaluation.formats": None, "factlens.evaluation.unrelated_finetune": None,
             "factlens.evaluation.side_effects": None, "factlens.evaluation.update_size": None}
    built = []
    for module_name, classes in names.items():
        module = importlib.import_module(module_name)
        if classes is None:  # every ConfigBase dataclass defined in the module
            classes = [n for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, ConfigBase)
                       and c is not ConfigBase and c.__module__ == module_name]
        for n in classes:
            cfg = getattr(module, n)()
            built.append(type(cfg).__name__)
    assert {"EditConfig", "EvalConfig", "RelearningConfig", "AlphaEditConfig", "RomeConfig"} <= set(built)


def test_check_numbers_refuses_none_where_the_field_takes_no_none():
    """``RomeConfig(seed=None)`` was accepted and ``random.Random(None)`` drew new prefixes on every call (an
    edit that could not be reproduced); ``v_lr=None`` failed later with a bare comparison error."""
    from factlens.editing import EditConfig
    from factlens.editing.memit import MemitConfig
    from factlens.editing.rome import RomeConfig

    with pytest.raises(TypeError, match=r"RomeConfig.seed must be an integer, got None"):
        RomeConfig(seed=None)
    with pytest.raises(TypeError, match=r"RomeConfig.v_lr must be a number, got None"):
        RomeConfig(v_lr=None)
    with pytest.raises(TypeError, match=r"MemitConfig.mom2_update_weight must be a number, got None"):
        MemitConfig(mom2_update_weight=None)
    with pytest.raises(TypeError, match=r"EditConfig.seed must be an integer, got None"):
        EditConfig(seed=None)
    # fields that take None still do
    assert RomeConfig(clamp_norm_factor=None).clamp_norm_factor is None
    assert EditConfig(batch_size=None).batch_size is None
