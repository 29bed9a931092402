"""EvalConfig: one nested, typed section per suite (owned by the suite's module), one rule for
unknown keys at every level, and the flat keys of older versions still read."""

from __future__ import annotations

import json
import warnings

import pytest

from factlens.evaluation import EvalConfig, evaluate
from factlens.evaluation.config import RENAMED, TextConfig
from factlens.evaluation.direction_ablation import DirectionAblationConfig
from factlens.evaluation.formats import FormatsConfig
from factlens.evaluation.probes import ProbesConfig
from factlens.evaluation.quantization import QuantizationConfig
from factlens.evaluation.relearning import RelearningConfig
from factlens.evaluation.side_effects import SideEffectsConfig
from factlens.evaluation.soft_prompts import SoftPromptsConfig
from factlens.evaluation.unrelated_finetune import UnrelatedFinetuneConfig
from factlens.evaluation.update_size import UpdateSizeConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SECTIONS = {"text": TextConfig, "formats": FormatsConfig, "side_effects": SideEffectsConfig,
            "relearning": RelearningConfig, "probes": ProbesConfig, "soft_prompts": SoftPromptsConfig,
            "quantization": QuantizationConfig, "update_size": UpdateSizeConfig,
            "unrelated_finetune": UnrelatedFinetuneConfig, "direction_ablation": DirectionAblationConfig}

#: ``EvalConfig(...).to_dict()`` as the flat version before the nested sections wrote it (the
#: ``resolved.eval`` of an older run folder), with non-default values.
OLD_FLAT = {
    "seed": 3, "batch_size": 8, "formats": ["mcq"], "n_shots": 1, "text_source": "t.txt", "n_text_chunks": 4,
    "text_seq_len": 16, "text_batch_size": 2, "mmlu_source": "mmlu/dev", "n_mmlu": 8, "mmlu_n_shots": 1,
    "relearn_steps": 5, "relearn_rank": 8, "relearn_lr": 1e-3, "relearn_batch_size": 4, "soft_prompt_len": 3,
    "soft_prompt_steps": 10, "soft_prompt_lr": 0.1, "soft_prompt_seeds": 1, "soft_prompt_max_norm": 2.0,
    "soft_prompt_position": "prepend", "probe_layers": [1, 2], "probe_C": 0.5,
}
NESTED = EvalConfig(
    seed=3, batch_size=8, n_shots=1, formats=FormatsConfig(formats=("mcq",)),
    text=TextConfig(source="t.txt", n_chunks=4, seq_len=16, batch_size=2),
    side_effects=SideEffectsConfig(mmlu_source="mmlu/dev", n_mmlu=8, mmlu_n_shots=1),
    relearning=RelearningConfig(steps=5, rank=8, lr=1e-3, batch_size=4),
    soft_prompts=SoftPromptsConfig(length=3, steps=10, lr=0.1, seeds=1, max_norm=2.0, position="prepend"),
    probes=ProbesConfig(layers=(1, 2), C=0.5),
)


def test_every_suite_section_is_typed_and_owned_by_its_module():
    cfg = EvalConfig()
    for name, cls in SECTIONS.items():
        assert isinstance(getattr(cfg, name), cls)
        assert cls.__module__ == ("factlens.evaluation.config" if name == "text" else f"factlens.evaluation.{name}")
    assert EvalConfig.nested_types() == SECTIONS


def test_nested_round_trip_through_json():
    cfg = NESTED.replace(quantization=QuantizationConfig(schemes=("nf4",), formats=("default", "mcq")),
                         direction_ablation=DirectionAblationConfig(layers=(1,)))
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["relearning"] == {"steps": 5, "rank": 8, "lr": 1e-3, "batch_size": 4, "text_batch_size": 4, "both_halves": True, "checkpoint": True,
                                "lora_forward": "factored", "retain_avoids_subjects": True}
    assert d["quantization"]["schemes"] == ["nf4"] and d["probes"]["layers"] == [1, 2]
    back = EvalConfig.from_dict(d)
    assert back == cfg and hash(back) == hash(cfg)
    assert EvalConfig.from_dict({}) == EvalConfig()
    # a partial table: the other fields keep their defaults
    assert EvalConfig.from_dict({"relearning": {"steps": 2}}).relearning == RelearningConfig(steps=2)


@pytest.mark.parametrize("section", ["(top)", *SECTIONS])
def test_unknown_key_at_each_level_lists_the_valid_ones(section):
    top = section == "(top)"
    cls = EvalConfig if top else SECTIONS[section]
    for bad in ({"bogus": 1} if top else {section: {"bogus": 1}}, {"bogus" if top else f"{section}.bogus": 1}):
        with pytest.raises(ValueError) as e:
            EvalConfig.from_dict(bad)
        msg = str(e.value)
        assert f"unknown {cls.__name__} fields ['bogus']" in msg, msg
        assert f"valid fields: {sorted(cls.field_names())}" in msg, msg
        assert top or f"(in EvalConfig.{section})" in msg, msg


def test_nested_field_takes_its_config_or_a_table_only():
    assert EvalConfig(relearning={"steps": 3}).relearning == RelearningConfig(steps=3)
    with pytest.raises(TypeError, match="EvalConfig.relearning must be a RelearningConfig"):
        EvalConfig(relearning=3)
    with pytest.raises(TypeError, match="EvalConfig.probes must be a ProbesConfig"):
        EvalConfig(probes=RelearningConfig())
    with pytest.raises(ValueError, match="takes a table of RelearningConfig fields"):
        EvalConfig.from_dict({"relearning": 3})


def test_old_flat_keys_map_with_a_deprecation_warning():
    with pytest.warns(FutureWarning, match="'relearn_steps' is deprecated; it is now 'relearning.steps'"):
        got = EvalConfig.from_dict(OLD_FLAT)
    assert got == NESTED
    with pytest.warns(FutureWarning):
        assert EvalConfig().override({"soft_prompt_steps": 4}).soft_prompts.steps == 4
    assert set(RENAMED) == set(OLD_FLAT) - {"seed", "batch_size", "n_shots"}  # every old key is mapped
    # the new form never warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert EvalConfig.from_dict(NESTED.to_dict()) == NESTED


def test_old_flat_key_in_code_names_its_new_place():
    with pytest.raises(ValueError, match=r"moved: relearn_steps -> relearning.steps"):
        EvalConfig().replace(relearn_steps=3)
    with pytest.raises(TypeError, match="relearn_steps"):
        EvalConfig(relearn_steps=3)


@pytest.mark.parametrize("make, word", [
    (lambda: TextConfig(seq_len=1), "TextConfig.seq_len"),
    (lambda: TextConfig(n_chunks=0), "TextConfig.n_chunks"),
    (lambda: FormatsConfig(formats=["nope"]), "unknown formats"),
    (lambda: SideEffectsConfig(n_mmlu=0), "SideEffectsConfig.n_mmlu"),
    (lambda: RelearningConfig(steps=-1), "RelearningConfig.steps"),
    (lambda: RelearningConfig(rank=0), "RelearningConfig.rank"),
    (lambda: SoftPromptsConfig(position="middle"), "SoftPromptsConfig.position"),
    (lambda: SoftPromptsConfig(seeds=0), "SoftPromptsConfig.seeds"),
    (lambda: ProbesConfig(C=0), "ProbesConfig.C"),
    (lambda: EvalConfig(batch_size=0), "EvalConfig.batch_size"),
    (lambda: EvalConfig.from_dict({"relearning": {"steps": -1}}), "RelearningConfig.steps"),
])
def test_sections_validate_their_values(make, word):
    with pytest.raises(ValueError, match=word):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: EvalConfig(seed=-1), r"EvalConfig.seed must be an integer >= 0, got -1"),
    (lambda: SoftPromptsConfig(max_norm=0.0), r"SoftPromptsConfig.max_norm must be > 0 \(or None"),
    (lambda: EvalConfig(soft_prompts={"max_norm": -1.0}), r"SoftPromptsConfig.max_norm must be > 0 .*got -1.0"),
    (lambda: EvalConfig(formats={"formats": []}), r"FormatsConfig.formats must name at least one format, or be None"),
    (lambda: EvalConfig(probes={"layers": [1.9]}), r"ProbesConfig.layers must be non-negative integer layer indices"),
    (lambda: ProbesConfig(layers=["a"]), r"ProbesConfig.layers must be non-negative integer layer indices .*'a'"),
    (lambda: ProbesConfig(layers=[True]), r"ProbesConfig.layers must be non-negative"),
])
def test_settings_that_failed_mid_run_or_said_nothing_are_refused_when_built(make, message):
    """A negative seed crashed in numpy ("expected non-negative integer") after earlier suites ran; a soft-prompt
    norm bound of 0 or less failed mid-attack; no formats ran the formats suite into an empty result; probe
    layer 1.9 probed layer 1 and "a" gave a bare int() error. Each is refused by name, with the valid range."""
    with pytest.raises(ValueError, match=message):
        make()
    cfg = EvalConfig(seed=0, soft_prompts={"max_norm": 0.5}, probes={"layers": [2, 1]}, formats={"formats": ["mcq"]})
    assert (cfg.seed, cfg.soft_prompts.max_norm, cfg.probes.layers, cfg.formats.formats) == (0, 0.5, (2, 1), ("mcq",))


def test_evaluate_reads_an_attack_suite_section(planted):
    """The attack suites' settings reach them through evaluate(config=...) (before: only a keyword)."""
    cfg = EvalConfig(quantization=QuantizationConfig(schemes=("nf4",)))
    res = evaluate(planted.model, planted.task, original=planted.model, suites=["quantization"], config=cfg,
                   show_progress=False)
    names = {m.name for m in res["quantization"].metrics}
    assert "quant_nf4_forget_accuracy" in names and not any(n.startswith(("quant_int8", "quant_int4")) for n in names)
    assert res["quantization"].extra["settings"]["schemes"] == ["nf4"]
    assert res.meta["config"]["quantization"]["schemes"] == ["nf4"]


def _number_fields(cls):
    """(field, is_float) of a config's fields annotated int or float (or either | None)."""
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        h = hints[f.name]
        args = set(typing.get_args(h)) if typing.get_origin(h) in (typing.Union, types.UnionType) else {h}
        if args & {int, float} and args <= {int, float, type(None)}:
            yield f.name, float in args


def test_every_evaluation_config_refuses_non_numbers_and_non_finite_numbers():
    """``--eval relearning.lr=Infinity`` ran the job into a FloatingPointError after the edits (NaN
    and infinity passed every range check), stored the setting as null, and then refused the same
    command; a string passed ``int(...) < 1`` checks and failed later. Every evaluation config now
    refuses them when built."""
    from factlens.evaluation.config import EvalConfig

    classes = [EvalConfig, *EvalConfig.nested_types().values()]
    checked = 0
    for cls in classes:
        for name, is_float in _number_fields(cls):
            with pytest.raises(TypeError, match=f"{cls.__name__}.{name} must be"):
                cls(**{name: "3"})
            if is_float:
                for bad in (float("nan"), float("inf")):
                    with pytest.raises(ValueError, match=f"{cls.__name__}.{name} must be a finite number"):
                        cls(**{name: bad})
            checked += 1
    assert checked >= 20
    with pytest.raises(ValueError, match="RelearningConfig.lr must be a finite number"):
        EvalConfig().override({"relearning.lr": float("inf")})


def test_numpy_layer_indices_are_layers_and_serialize():
    """ProbesConfig(layers=np.int64(2)) raised a bare "'numpy.int64' object is not iterable" (LogitLensConfig
    too), and numpy integers in a list were stored as they came, so the config could not be written to JSON."""
    import json

    import numpy as np

    from factlens.evaluation.direction_ablation import DirectionAblationConfig
    from factlens.evaluation.logit_lens import LogitLensConfig

    assert ProbesConfig(layers=np.int64(2)).layers == (2,)
    assert LogitLensConfig(layers=np.int64(2)).layers == (2,)
    for cfg in (ProbesConfig(layers=[np.int64(1), np.int64(3)]), LogitLensConfig(layers=np.array([3, 1])),
                DirectionAblationConfig(layers=[np.int32(1)])):
        assert all(type(x) is int for x in cfg.layers)
    json.dumps(EvalConfig(probes={"layers": [np.int64(1)]}).to_dict())
    with pytest.raises(ValueError, match=r"ProbesConfig.layers must be non-negative integer layer indices .*'ab'"):
        ProbesConfig(layers="ab")


def test_candidate_score_is_checked_and_keys_the_cached_baselines():
    """The original's cached scores are keyed by how candidates are compared: a per-token evaluation must not
    reuse the summed one's baseline (or the other way round) from a shared BaselineCache."""
    from factlens.data.formats import format_prompts
    from factlens.evaluation.attacks import task_key
    from factlens.evaluation.standard import scores_key
    from factlens.testing import planted_fact_model

    p = planted_fact_model()
    items = format_prompts(p.task.forget)
    a, b = EvalConfig(), EvalConfig(candidate_score="token_mean")
    assert scores_key(items, a) != scores_key(items, b) and task_key(p.task, a) != task_key(p.task, b)
    assert EvalConfig.from_dict(b.to_dict()) == b and EvalConfig.from_dict({}).candidate_score == "sum"
    with pytest.raises(ValueError, match=r"EvalConfig.candidate_score must be one of \['sum', 'token_mean'\]"):
        EvalConfig(candidate_score="mean")
