"""Evaluation settings: one frozen, serializable :class:`EvalConfig` with a nested section per suite.

The settings every suite shares (``seed``, ``batch_size``, ``n_shots``, the general text
``text``) are fields of :class:`EvalConfig`; each suite's own settings are one frozen
config defined in (owned by) the suite's module and nested here under the suite's name:

============================  ==============================================================
``EvalConfig.<field>``        type (module)
============================  ==============================================================
``text``                      :class:`TextConfig` (here: read by ``side_effects``,
                              ``relearning`` and ``unrelated_finetune``)
``formats``                   :class:`~factlens.evaluation.formats.FormatsConfig`
``side_effects``              :class:`~factlens.evaluation.side_effects.SideEffectsConfig`
``relearning``                :class:`~factlens.evaluation.relearning.RelearningConfig`
``probes``                    :class:`~factlens.evaluation.probes.ProbesConfig`
``soft_prompts``              :class:`~factlens.evaluation.soft_prompts.SoftPromptsConfig`
``quantization``              :class:`~factlens.evaluation.quantization.QuantizationConfig`
``update_size``               :class:`~factlens.evaluation.update_size.UpdateSizeConfig`
``unrelated_finetune``        :class:`~factlens.evaluation.unrelated_finetune.UnrelatedFinetuneConfig`
``direction_ablation``        :class:`~factlens.evaluation.direction_ablation.DirectionAblationConfig`
============================  ==============================================================

(``standard`` and ``mechanisms`` have no settings of their own.) A suite added later needs no
field here: its :class:`~factlens.evaluation.Suite` entry names its config type
(``config_type``), its settings are a table in ``EvalConfig.other_suites`` under the suite's
name, and ``EvalConfig.suite_config(name_or_entry)`` returns them typed, for the suites above
as well (``config.suite_config("relearning") is config.relearning``). All of them are
:class:`~factlens.config.ConfigBase` configs: ``to_dict`` / ``from_dict`` round-trip the
nested tables, and an unknown key at any level is an error that lists the valid ones.

The flat names of older versions (``relearn_steps``, ``soft_prompt_len``, ``text_source``,
``mmlu_source``, ``probe_layers``...; see :data:`RENAMED`) are still read by
``EvalConfig.from_dict`` / ``override`` and by the runner's ``--eval`` options and run
configs, with a ``FutureWarning``: a run folder written by an older version resumes and
reports. Code passes the nested form: ``EvalConfig(relearning=RelearningConfig(steps=10))``
or ``EvalConfig(relearning={"steps": 10})``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping

from factlens.config import ConfigBase, check_config_type, check_numbers
from factlens.editing.config import _read_only
from factlens.registry import load

# The suites' own settings live in the suite modules; these import EvalConfig only for type
# checking (and lazily where they build a default one), so importing them here is no cycle.
from factlens.evaluation.direction_ablation import DirectionAblationConfig
from factlens.evaluation.formats import FormatsConfig
from factlens.evaluation.probes import ProbesConfig
from factlens.evaluation.quantization import QuantizationConfig
from factlens.evaluation.relearning import RelearningConfig
from factlens.evaluation.side_effects import SideEffectsConfig
from factlens.evaluation.soft_prompts import SoftPromptsConfig
from factlens.evaluation.unrelated_finetune import UnrelatedFinetuneConfig
from factlens.evaluation.update_size import UpdateSizeConfig

if TYPE_CHECKING:
    from factlens.evaluation import Suite

__all__ = ["EvalConfig", "TextConfig", "RENAMED", "or_default", "read_only_table"]

#: The flat ``EvalConfig`` keys of older versions -> where each lives now.
RENAMED: Mapping[str, str] = MappingProxyType({
    "formats": "formats.formats",
    "text_source": "text.source", "n_text_chunks": "text.n_chunks", "text_seq_len": "text.seq_len",
    "text_batch_size": "text.batch_size",
    "mmlu_source": "side_effects.mmlu_source", "n_mmlu": "side_effects.n_mmlu",
    "mmlu_n_shots": "side_effects.mmlu_n_shots",
    "relearn_steps": "relearning.steps", "relearn_rank": "relearning.rank", "relearn_lr": "relearning.lr",
    "relearn_batch_size": "relearning.batch_size",
    "soft_prompt_len": "soft_prompts.length", "soft_prompt_steps": "soft_prompts.steps",
    "soft_prompt_lr": "soft_prompts.lr", "soft_prompt_seeds": "soft_prompts.seeds",
    "soft_prompt_max_norm": "soft_prompts.max_norm", "soft_prompt_position": "soft_prompts.position",
    "probe_layers": "probes.layers", "probe_C": "probes.C",
})


@dataclass(frozen=True)
class TextConfig(ConfigBase):
    """General text of the evaluation (``EvalConfig.text``).

    Read by the ``side_effects`` suite (next-token accuracy / loss / KL), the ``relearning``
    attack (its SFT term) and the ``unrelated_finetune`` attack (its ``"text"`` data); the
    ``linear_lens`` suite fits its maps on ``source`` only, with chunks of its own size.

    Attributes:
        source: A local ``.txt`` file (e.g. ``"../shared/data/wikitext2/test.txt"``), a
            Hugging Face dataset name (``"name"`` or ``"name:config"``), or ``None`` for the
            built-in general text.
        n_chunks: Number of text chunks.
        seq_len: Tokens per chunk (BOS included).
        batch_size: Chunks per forward pass of the ``side_effects`` suite (the logits of one
            chunk at a time are materialized, so keep it small for 262k-token vocabularies).
            Changes no result; the attacks' chunks per training step are their own settings
            (``relearning.text_batch_size``, ``unrelated_finetune.text_batch_size``).
    """

    source: str | None = None
    n_chunks: int = 16
    seq_len: int = 64
    batch_size: int = 4

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        if self.source is not None and not isinstance(self.source, str):
            object.__setattr__(self, "source", str(self.source))
        for name in ("n_chunks", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TextConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.seq_len < 2:
            raise ValueError(f"TextConfig.seq_len must be >= 2 (BOS + one token), got {self.seq_len}")


@dataclass(frozen=True)
class EvalConfig(ConfigBase):
    """Settings of :func:`factlens.evaluate` (see the module docstring for the sections).

    Attributes:
        seed: Seed of everything random (multiple-choice option order, text and MMLU
            sampling, relearning and soft-prompt initialisation); an integer >= 0.
        batch_size: Prompts per forward pass when scoring. Changes no result; the soft-prompt
            attack's facts per step are ``soft_prompts.batch_size``.
        n_shots: Solved in-context examples in multiple-choice prompts.
        mcq_shots: Where the solved examples of multiple-choice prompts of non-sports facts
            come from: ``"fixed"``, a fixed pool of general-knowledge questions no task asks
            (:data:`factlens.data.formats.GENERAL_MCQ_SHOTS`), the same for every split;
            ``"dataset"``, other facts of the split being scored (a forget fact's prompt then
            shows other forget facts with their original answers marked correct, a maintain
            fact's untouched facts), as before 2026-12-05: older run folders resume with it.
            (The editor's own multiple-choice training prompts, ``EditConfig.train_format="mcq"``,
            take the fixed pool too since then; an older folder trained that way is not told.)
        candidate_score: How an answer is chosen among a fact's candidates, in every suite that
            scores them (accuracies, the attacks' recovery, the at-chance flags; the logit and
            linear lenses read first tokens, but their before-scores and baselines follow it):
            ``"sum"`` (default), by the whole answer's
            log-probability; ``"token_mean"``, by its mean log-probability per token, as ROME's
            and MEMIT's CounterFact efficacy, paraphrase and neighborhood scores compare
            ``target_new`` with ``target_true``. Both rank one-token candidates (every sports
            fact) the same; on CounterFact ``"sum"`` favours the shorter answer
            (:data:`factlens.prompt_scores.CANDIDATE_SCORES`). Probabilities of answers
            (``*_prob`` metrics) are the whole answers' either way.
        text: General text (:class:`TextConfig`).
        formats: The ``formats`` suite (:class:`~factlens.evaluation.formats.FormatsConfig`).
        side_effects: The ``side_effects`` suite's MMLU
            (:class:`~factlens.evaluation.side_effects.SideEffectsConfig`).
        relearning: The relearning attack (:class:`~factlens.evaluation.relearning.RelearningConfig`).
        probes: The linear probes (:class:`~factlens.evaluation.probes.ProbesConfig`).
        soft_prompts: The soft-prompt attack (:class:`~factlens.evaluation.soft_prompts.SoftPromptsConfig`).
        quantization: :class:`~factlens.evaluation.quantization.QuantizationConfig`.
        update_size: :class:`~factlens.evaluation.update_size.UpdateSizeConfig`.
        unrelated_finetune: :class:`~factlens.evaluation.unrelated_finetune.UnrelatedFinetuneConfig`.
        direction_ablation: :class:`~factlens.evaluation.direction_ablation.DirectionAblationConfig`.
        other_suites: The settings of suites without a field here (suite name -> a table of its
            config's fields, or the config itself, kept as its table): suites registered in
            :data:`~factlens.evaluation.SUITES` after these fields were written and suites of one's
            own (a :class:`~factlens.evaluation.Suite` entry with a ``config_type``). Read them with
            :meth:`suite_config`. Tables of registered suites are checked here; those of one's own
            suites when :func:`~factlens.evaluate` runs them (which refuses settings for a suite it
            neither knows nor runs). A built-in suite's name here is an error (use its field).

    Example:
        >>> cfg = EvalConfig(relearning=RelearningConfig(steps=10), text={"n_chunks": 4})
        >>> cfg.relearning.steps, cfg.text.n_chunks, cfg.relearning.rank
        (10, 4, 512)
        >>> EvalConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> cfg.override({"relearning.lr": 1e-3}).relearning  # doctest: +NORMALIZE_WHITESPACE
        RelearningConfig(steps=10, rank=512, lr=0.001, batch_size=8, text_batch_size=4, both_halves=True, checkpoint=True,
        lora_forward='factored', retain_avoids_subjects=True)
        >>> EvalConfig.from_dict({"relearning": {"stepz": 1}})
        Traceback (most recent call last):
        ...
        ValueError: unknown RelearningConfig fields ['stepz'] (in EvalConfig.relearning); valid fields: ['batch_size', 'both_halves', 'checkpoint', 'lora_forward', 'lr', 'rank', 'retain_avoids_subjects', 'steps', 'text_batch_size']
    """

    _renamed = RENAMED
    #: Nested sections shared by several suites (not one suite's settings).
    _shared: ClassVar[tuple[str, ...]] = ("text",)

    seed: int = 0
    batch_size: int = 16
    n_shots: int = 2
    mcq_shots: str = "fixed"
    candidate_score: str = "sum"
    text: TextConfig = TextConfig()
    formats: FormatsConfig = FormatsConfig()
    side_effects: SideEffectsConfig = SideEffectsConfig()
    relearning: RelearningConfig = RelearningConfig()
    probes: ProbesConfig = ProbesConfig()
    soft_prompts: SoftPromptsConfig = SoftPromptsConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    update_size: UpdateSizeConfig = UpdateSizeConfig()
    unrelated_finetune: UnrelatedFinetuneConfig = UnrelatedFinetuneConfig()
    direction_ablation: DirectionAblationConfig = DirectionAblationConfig()
    other_suites: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_numbers(self)  # types and finiteness first: NaN or a string passed the range checks
        self._nest_tables()
        if int(self.seed) < 0:  # numpy's generators refuse it, only once the first seeded suite runs
            raise ValueError(f"EvalConfig.seed must be an integer >= 0, got {self.seed!r}")
        if int(self.batch_size) < 1:
            raise ValueError(f"EvalConfig.batch_size must be >= 1, got {self.batch_size!r}")
        if int(self.n_shots) < 0:
            raise ValueError(f"EvalConfig.n_shots must be >= 0, got {self.n_shots!r}")
        from factlens.data.formats import MCQ_SHOT_SOURCES

        if self.mcq_shots not in MCQ_SHOT_SOURCES:
            raise ValueError(f"EvalConfig.mcq_shots must be one of {list(MCQ_SHOT_SOURCES)}, got {self.mcq_shots!r}")
        from factlens.prompt_scores import CANDIDATE_SCORES

        if self.candidate_score not in CANDIDATE_SCORES:
            raise ValueError(f"EvalConfig.candidate_score must be one of {list(CANDIDATE_SCORES)}, "
                             f"got {self.candidate_score!r}")
        object.__setattr__(self, "other_suites", read_only_table(self._other_suite_tables(),
                                                                 where="EvalConfig.other_suites"))

    @classmethod
    def _unknown_error(cls, unknown: list[str], where: str = "") -> ValueError:
        """The base message, and where a suite without a field of its own keeps its settings."""
        from factlens.evaluation import SUITES

        err = super()._unknown_error(unknown, where)
        others = sorted({k.split(".")[0] for k in unknown if k.split(".")[0] in SUITES} - set(cls.suite_fields()))
        if not others or where:
            return err
        return ValueError(f"{err} (the settings of {others} live in other_suites: e.g. "
                          f"--eval other_suites.{unknown[0]}=... or EvalConfig(other_suites={{{others[0]!r}: ...}}))")

    @classmethod
    def suite_fields(cls) -> dict[str, type[ConfigBase]]:
        """The suites with a field of their own: suite name -> config type."""
        return {k: v for k, v in cls.nested_types().items() if k not in cls._shared}

    def _other_suite_tables(self) -> dict[str, dict[str, Any]]:
        """``other_suites`` as read-only tables (a copy), checked as far as the registered suites allow."""
        if not isinstance(self.other_suites, Mapping):
            raise TypeError(f"EvalConfig.other_suites must map suite names to settings, got {self.other_suites!r}")
        tables: dict[str, dict[str, Any]] = {}
        for name, value in self.other_suites.items():
            if not isinstance(name, str):
                raise TypeError(f"EvalConfig.other_suites keys are suite names, got {name!r}")
            if name in self.suite_fields():
                raise ValueError(f"the settings of the {name!r} suite go in EvalConfig.{name} (a "
                                 f"{self.suite_fields()[name].__name__}), not in other_suites")
            if isinstance(value, ConfigBase):
                value = value.to_dict()
            elif not isinstance(value, Mapping):
                raise TypeError(f"EvalConfig.other_suites[{name!r}] must be the suite's config or a table of its "
                                f"fields, got {type(value).__name__}: {value!r}")
            tables[name] = read_only_table({str(k): v for k, v in value.items()}, where="EvalConfig.other_suites")
            entry = _registered_suite(name)
            if entry is not None and entry.config_type is None:
                raise ValueError(f"the {name!r} suite takes no settings; suites with settings: "
                                 f"{sorted({*self.suite_fields(), *_registered_with_settings()})}")
            if entry is not None:
                self._typed(entry, tables[name])  # a registered suite's table is checked now
        return tables

    def suite_config(self, suite: str | Suite) -> ConfigBase:
        """The settings of one suite, typed.

        A suite with a field of its own (``relearning``...) gets that field; any other suite gets
        its table in :attr:`other_suites` built into the config type its entry declares
        (``Suite.config_type``; the fields the table leaves out, or all of them when there is
        no table, take their defaults).

        Args:
            suite: A suite name (built in or registered in :data:`~factlens.evaluation.SUITES`)
                or a :class:`~factlens.evaluation.Suite` entry (needed for a suite of one's own:
                the entry names its config type).

        Raises:
            ValueError: The suite takes no settings, or ``suite`` is the name of a suite that is
                not registered (the message lists the suites with settings), or its table has an
                unknown key (the message lists the valid fields).
            TypeError: ``suite`` is an entry whose ``config_type`` is not its field's type.

        Example:
            >>> cfg = EvalConfig(relearning=RelearningConfig(steps=5))
            >>> cfg.suite_config("relearning") is cfg.relearning
            True
        """
        name = suite if isinstance(suite, str) else suite.name
        entry = _registered_suite(name) if isinstance(suite, str) else suite
        declared = (check_config_type(load(entry.config_type), where=f"suite {name!r}")
                    if entry is not None and entry.config_type is not None else None)
        if name in self.suite_fields():
            value = getattr(self, name)
            if declared is not None and not isinstance(value, declared):
                raise TypeError(f"suite {name!r} declares settings {declared.__name__}, but EvalConfig.{name} is a "
                                f"{type(value).__name__}")
            return value
        if declared is None:
            # (not the other_suites keys: a table names no config type, so such a name is no way to read them)
            known = sorted({*self.suite_fields(), *_registered_with_settings()})
            hint = ("it is not registered in factlens.evaluation.SUITES: pass its Suite entry (which names its "
                    "config type)" if entry is None else "it takes no settings (its Suite entry has no config_type)")
            raise ValueError(f"no settings for suite {name!r}: {hint}; suites with settings: {known}")
        return self._typed(entry, self.other_suites.get(name, {}))

    def with_suite_defaults(self, suites: Iterable[str]) -> EvalConfig:
        """This config with every field of each of ``suites`` that keeps its settings in
        :attr:`other_suites` (registered, with a ``config_type``) written out, defaults included.

        ``other_suites`` holds the fields one set; a record of what an evaluation measured with
        needs the others too: a run with the default ``top_k`` and one with ``top_k=1`` looked
        alike (only one named it), and a default changed by a later version went unseen. The
        runner's resolved record (``run_config.json``) and ``factlens compare`` read this form.
        Other suites' tables (suites of one's own, suites not in ``suites``) stay as given.

        Example:
            >>> EvalConfig().with_suite_defaults(["standard", "logit_lens"]).other_suites["logit_lens"]["top_k"]
            20
        """
        tables = dict(self.other_suites)
        for name in suites:
            entry = _registered_suite(name)
            if name not in self.suite_fields() and entry is not None and entry.config_type is not None:
                tables[name] = self.suite_config(entry).to_dict()
        return self.replace(other_suites=tables)

    @staticmethod
    def _typed(entry: Suite, table: Mapping[str, Any]) -> ConfigBase:
        cls = check_config_type(load(entry.config_type), where=f"suite {entry.name!r}")
        where = f"EvalConfig.other_suites[{entry.name!r}]"
        return cls._build(cls.normalize(table, where=where), where=where)


def _registered_suite(name: str) -> Suite | None:
    """The :data:`~factlens.evaluation.SUITES` entry called ``name``, or ``None``."""
    from factlens.evaluation import SUITES  # imported here: factlens.evaluation imports this module

    return SUITES.get(name) if name in SUITES else None


def _registered_with_settings() -> list[str]:
    from factlens.evaluation import SUITES

    return [e.name for e in SUITES if e.config_type is not None]


def or_default(config: EvalConfig | None) -> EvalConfig:
    """``config``, or ``EvalConfig()`` for ``None`` (the default of every suite function)."""
    return EvalConfig() if config is None else config


def read_only_table(value: Any, *, where: str) -> Any:
    """A deep copy of ``value`` with every mapping as a read-only table that names ``where`` when
    it refuses a change, and every list or tuple as a tuple (JSON gives lists back: both load as
    the same tuple; ``to_dict`` gives plain dicts and lists).

    Example:
        >>> import json
        >>> t = read_only_table({"a": {"b": [1]}}, where="RunConfig.task_options")
        >>> t == {"a": {"b": (1,)}}, json.dumps(t)
        (True, '{"a": {"b": [1]}}')
        >>> try:
        ...     t["a"]["b"] = 2
        ... except TypeError as e:
        ...     print(str(e).split(";")[0])
        RunConfig.task_options is read-only (the config is frozen)
    """
    return _read_only(value, where)
