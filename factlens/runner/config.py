"""Run configuration: what an experiment runs, from flags or a YAML/TOML file.

A :class:`RunConfig` names the task, the model, the localizations, the seeds and the
settings of every step. Its *experiment* fields decide the results; resuming a run directory
with different experiment fields is an error (pass ``--overwrite`` to start over). The
*scope* fields (``localizations``, ``seeds``) may grow between invocations: completed
localizations are skipped, new ones are added. The *execution* fields (``out``,
``executor``, ``ray_address``, ``gpus_per_job``, ``show_progress``) never matter for results.
The *input files* (``data``, ``mcq_data``, ``eval.text.source``, ``eval.side_effects.mmlu_source``,
``edit.sft_source``) are also compared by content (:meth:`RunConfig.input_hashes`, sha256),
so a data file rewritten between two invocations is an error too. An option the task does
not use (``--data`` of the planted task, ``--mcq-data`` of a sports task, ``--ray-address``
of a local run...) is refused rather than silently recorded.

Config files use the field names as keys (dashes or underscores), with ``[edit]`` /
``[eval]`` / ``[task_options]`` / ``[localize_options]`` tables:

.. code-block:: toml

    task = "sports-athlete-editing"
    model = "gemma-3-270m"
    localizations = ["flu", "random", "all_mlps"]
    forget_size = 16
    seeds = [0, 1]

    [edit]          # factlens.editing.EditConfig fields, on top of the preset
    steps = 20

    [eval]          # factlens.evaluation.EvalConfig fields, on top of the preset
    batch_size = 8

    [eval.relearning]   # a suite's own settings (here RelearningConfig); only the fields named change
    steps = 5

``edit`` and ``eval`` are :class:`~factlens.config.Overrides` of ``EditConfig`` /
``EvalConfig``: checked when the ``RunConfig`` is made (an unknown key at any level, or a
value of the wrong type, is an error that names it and lists the valid keys), kept as nested
tables in ``run_config.json``. The flat evaluation keys of older versions (``relearn_steps``,
``text_source``...) are still read, with a ``FutureWarning``, so that run folders written
by them resume and report (:func:`~factlens.runner.stored.upgrade_stored`). Input files are
hashed and config files read in :mod:`factlens.runner.inputs`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from factlens.config import Overrides, _plain
from factlens.runner.config_checks import as_list_field, as_seed
from factlens.runner.config_checks import check_device  # noqa: F401 - importable from here
from factlens.runner.inputs import _looks_local, _where, hash_input
from factlens.runner.inputs import load_config_file  # noqa: F401 - importable from here, as before the split
from factlens.runner.method_settings import resolved_method_settings

if TYPE_CHECKING:
    from factlens.editing import EditConfig
    from factlens.evaluation import EvalConfig

__all__ = [
    "RunConfig",
    "DEFAULT_LOCALIZATIONS",
    "ALL_SUITES",
    "TASK_NAMES",
    "EXECUTION_FIELDS",
    "SCOPE_FIELDS",
    "MODEL_DTYPES",
    "CPU_EVAL_DEFAULTS",
    "PLANTED_EVAL_DEFAULTS",
    "PLANTED_EDIT_DEFAULTS",
    "DEFAULT_LOCALIZE_OPTIONS",
    "on_default_localize_options",
    "SMALL_N_MAINTAIN",
    "split_unit",
    "unit_names",
    "default_objective",
]

from factlens.runner.defaults import (  # noqa: F401 - the run defaults, importable from here as before
    DEFAULT_LOCALIZATIONS, ALL_SUITES, TASK_NAMES, EXECUTION_FIELDS, SCOPE_FIELDS, MODEL_DTYPES,
    SMALL_N_MAINTAIN, DEFAULT_LOCALIZE_OPTIONS, on_default_localize_options, CPU_EVAL_DEFAULTS, PLANTED_EDIT_DEFAULTS, PLANTED_EVAL_DEFAULTS)


@dataclass(frozen=True)
class RunConfig:
    """Everything ``factlens run`` needs.

    Attributes:
        task: One of :data:`TASK_NAMES`.
        model: ``"gemma-3-270m"`` (embedded), ``"planted"`` (the planted-fact test model)
            or any TransformerLens model name.
        localizations: Named localizations (see ``factlens.localization.LOCALIZATIONS``).
        methods: Edit methods (``factlens.editing.registry.EDIT_METHODS``: ``finetune``, ``rome``,
            ``memit``), crossed with the localizations.
        objectives: Training objectives (``factlens.editing.registry.OBJECTIVES``: ``unlearn``,
            ``npo``, ``simnpo``, ``rmu``, ``graddiff``...), crossed with the localizations and
            methods; empty: the task's own objective (``inject`` for editing tasks, ``unlearn``
            for Sports-Unlearning). Each (localization, method, objective) is one *unit* of the
            comparison, named ``localization`` for the task's default (fine-tuning on the
            task's objective) and ``localization+method`` / ``localization+objective`` otherwise
            (:meth:`units`, :func:`split_unit`).
        forget_size: Facts to edit (``n_forget``; chunk size for sequential editing;
            ``None``: the task's default, all athletes of the sport for full-sports tasks).
        seeds: One run per seed (task split, localization, edit, evaluation).
        data: Fact data in the paper's format (Sports Facts CSV / CounterFact JSON), local
            path or Hugging Face dataset name; ``None``: built-in data.
        mcq_data: CounterFact multiple-choice questions (JSONL/parquet), joined on ``case_id``.
        filter_known: Keep only facts the unedited model knows (``factlens.data.filter_known``).
        max_facts: Cap on the facts kept after filtering (seeded subsample; ``None``: all).
        task_options: Extra task-function keywords (``sport``, ``n_chunks``, ``n_retain``,
            ``n_maintain``...): the fields of the task's
            :class:`~factlens.tasks.TaskOptions` type (``TaskEntry.options``), checked by
            name and type when the config is made. With ``eval_preset="small"`` and neither ``n_maintain`` nor
            ``n_retain`` given, at most :data:`SMALL_N_MAINTAIN` maintain facts are kept when
            at least twice as many facts are left after the forget set.
        param_budget: Parameter budget of the budgeted localizations; ``None``: the FLU
            mask's ``n_params`` (as in the paper).
        localize_on: The facts localization runs on: ``"forget"`` (the task's forget facts),
            ``"known"`` (every fact after filtering) or ``"auto"`` (default): the probing-based
            FLU of the sports tasks trains its probes on every known fact (as the paper does: a
            3-way probe fit on 16 facts is noise - measured on Gemma 3 270M, its
            cross-validated accuracy never left chance), every other localization uses the
            forget facts.
        localize_options: Extra ``localization_mask`` keywords: shared ones (e.g.
            ``batch_size``, passed to the methods that take them) and tables per scoring method
            or localization (``{"causal_tracing": {"n_samples": 5}}`` applies to every
            localization scored by causal tracing; a localization's own table, e.g.
            ``"causal_tracing_mlps"``, overrides it). Default: :data:`DEFAULT_LOCALIZE_OPTIONS`.
            What is given goes on top of those defaults, table by table, as a config file's
            ``[localize_options]`` does (:func:`on_default_localize_options`): ``{"causal_tracing":
            {"n_samples": 8}}`` keeps ``include_resid=False``; set a default's key to change it
            (``include_resid=True``). A table given here replaced the defaults until 2026-12-06,
            so that the same table traced otherwise from Python than from a config file.
        edit_preset: ``"fast"`` (``EditConfig.fast()``, for CPU; with
            :data:`PLANTED_EDIT_DEFAULTS` on the planted model) or ``"paper"`` (``EditConfig()``).
        edit: ``EditConfig`` field overrides on top of the preset: a mapping (or an
            ``EditConfig``: all its fields), kept as :class:`~factlens.config.Overrides`.
        eval: ``EvalConfig`` field overrides on top of the model's defaults
            (:data:`CPU_EVAL_DEFAULTS` / :data:`PLANTED_EVAL_DEFAULTS`; ``eval_preset="full"``
            uses ``EvalConfig()`` as is): nested tables per suite (``{"relearning":
            {"steps": 5}}``) or dotted keys (``{"relearning.steps": 5}``); only the fields named
            change. Kept as :class:`~factlens.config.Overrides`.
        eval_preset: ``"small"`` (the defaults above) or ``"full"``.
        suites: Evaluation suites (:data:`ALL_SUITES`).
        device: Device of the model (``"cpu"``, ``"cuda"``...).
        dtype: Dtype of the model's weights: ``"float32"`` (default), ``"bfloat16"`` (the
            paper's 7-9B models on a GPU: half the memory of float32; edits train float32
            master copies of the masked tensors) or ``"float16"``.
        out: Run directory.
        executor: ``"local"`` or ``"ray"``.
        workers: Worker processes of the local executor (each loads its own model: ``workers``
            times the memory; the torch threads are divided among them). Same results.
        ray_address: Ray cluster address (``None``: start or join a local instance).
        gpus_per_job: GPUs reserved per Ray job.
        cpus_per_job: CPUs reserved per Ray job.
        show_progress: Progress bars (``False``, ``--no-progress``: none in the whole run,
            worker processes included; see :func:`factlens.progress`).
    """

    task: str = "sports-athlete-editing"
    model: str = "gemma-3-270m"
    localizations: tuple[str, ...] = DEFAULT_LOCALIZATIONS
    methods: tuple[str, ...] = ("finetune",)
    objectives: tuple[str, ...] = ()
    forget_size: int | None = 16
    seeds: tuple[int, ...] = (0,)
    data: str | None = None
    mcq_data: str | None = None
    filter_known: bool = True
    max_facts: int | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    param_budget: int | None = None
    localize_on: str = "auto"
    localize_options: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_LOCALIZE_OPTIONS))
    edit_preset: str = "fast"
    edit: Overrides[EditConfig] = field(default_factory=dict)  # type: ignore[assignment]  # mappings are converted
    eval: Overrides[EvalConfig] = field(default_factory=dict)  # type: ignore[assignment]
    eval_preset: str = "small"
    suites: tuple[str, ...] = ALL_SUITES
    device: str = "cpu"
    dtype: str = "float32"
    out: str = "results"
    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None
    gpus_per_job: float = 0.0
    cpus_per_job: float = 1.0
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name in ("localizations", "seeds", "suites", "methods", "objectives"):
            object.__setattr__(self, name, as_list_field(name, getattr(self, name)))
        object.__setattr__(self, "seeds", tuple(as_seed(s) for s in self.seeds))
        from factlens.evaluation.config import read_only_table

        for name in ("task_options", "localize_options"):  # a deep, read-only copy: never changed in place
            v = getattr(self, name)
            if not isinstance(v, Mapping):
                raise ValueError(f"config field {name!r} must be a table/mapping of options, got {v!r}")
            if name == "localize_options":  # as from a config file: the given tables on top of the defaults'
                v = on_default_localize_options(v)
            object.__setattr__(self, name, read_only_table(v, where=f"RunConfig.{name}"))
        if isinstance(self.out, (str, Path)) and str(self.out).startswith("~"):
            # a config file's out = "~/runs/x" (no shell to expand it) made a folder named "~" here
            object.__setattr__(self, "out", str(Path(self.out).expanduser()))
        self._type_overrides()
        self.validate()

    def _type_overrides(self) -> None:
        """``edit`` / ``eval`` as validated :class:`~factlens.config.Overrides` (keys and value types)."""
        from factlens.editing import EditConfig
        from factlens.evaluation import EvalConfig

        for name, cls in (("edit", EditConfig), ("eval", EvalConfig)):
            v = getattr(self, name)
            if not isinstance(v, (Mapping, cls)):
                raise ValueError(f"config field {name!r} must be a table/mapping of {cls.__name__} options, got {v!r}")
            try:
                object.__setattr__(self, name, Overrides(cls, v, label=name))
            except (TypeError, ValueError) as e:
                raise ValueError(f"bad {name} option(s): {e}") from e

    #: Scalar fields checked for their type up front (the others have checks of their own).
    _TYPED: ClassVar[tuple[str, ...]] = ("task", "model", "data", "mcq_data", "filter_known", "localize_on",
                                         "edit_preset", "eval_preset", "device", "dtype", "out", "executor",
                                         "ray_address", "gpus_per_job", "cpus_per_job", "show_progress")

    def _check_types(self) -> None:
        """A config file's ``filter_known = "no"`` or ``show_progress = "false"`` was truthy (kept every
        fact, showed bars); ``gpus_per_job = nan`` passed ``< 0``; ``task = ["x"]`` was a TypeError."""
        import math
        import typing

        from factlens.config import type_ok
        from factlens.editing import EditConfig
        from factlens.evaluation import EvalConfig

        hints = typing.get_type_hints(type(self), localns={"EditConfig": EditConfig, "EvalConfig": EvalConfig})
        for name in self._TYPED:
            v, hint = getattr(self, name), hints[name]
            if not type_ok(v, hint) or (isinstance(v, float) and not math.isfinite(v)):
                kind = {bool: "true or false", float: "a finite number"}.get(hint, "a string" + (
                    " (or left out)" if type(None) in typing.get_args(hint) else ""))
                raise ValueError(f"config field {name!r} must be {kind}, got {v!r} ({type(v).__name__})")

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and the accepted values."""
        self._check_types()
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; choose one of {list(TASK_NAMES)}")
        if self.task == "planted" and self.model != "planted":
            raise ValueError("task 'planted' runs on the planted-fact model: pass --model planted")
        if self.model == "planted" and self.task.startswith(("counterfact", "sequential")):
            raise ValueError(f"the planted model only knows sports facts; task {self.task!r} needs a real model")
        self._validate_lists()
        self._validate_choices()
        self._validate_inputs()

    def _validate_lists(self) -> None:
        """The localizations, methods, seeds and suites: known, given and listed once."""
        if not self.localizations:
            raise ValueError("give at least one localization (e.g. --localizations flu,random)")
        from factlens.localization.registry import LOCALIZATIONS, METHODS

        bad = [l for l in self.localizations if l not in LOCALIZATIONS]
        if bad:
            scoring = [l for l in bad if l in METHODS]
            hint = (f" ({scoring} are scoring methods without named localizations: give the ScoringMethod entry "
                    "compared=True, or add a Localization entry, see docs/extending.md)" if scoring else "")
            raise ValueError(f"unknown localization(s) {bad}; known: {list(LOCALIZATIONS.names())}{hint}")
        if len(set(self.localizations)) != len(self.localizations):
            raise ValueError(f"localizations listed twice: {list(self.localizations)}")
        self._validate_methods()
        if not self.seeds:
            raise ValueError("give at least one seed (e.g. --seeds 0)")
        if len(set(self.seeds)) != len(self.seeds):  # --seeds 0,0 ran the same jobs twice
            raise ValueError(f"seeds listed twice: {list(self.seeds)}")
        # recorded, then replaced by each job's seed (a whole EditConfig / EvalConfig carries its default seed 0)
        for name, over in (("edit", self.edit), ("eval", self.eval)):
            if over.get("seed", 0) != 0:
                raise ValueError(f"--{name} seed={over['seed']} has no effect: every job's edit and evaluation use the "
                                 "run's seed; choose the seeds with --seeds")
        from factlens.evaluation import SUITES

        if not self.suites:  # --suites "" localized and edited, then measured nothing
            raise ValueError("give at least one evaluation suite (e.g. --suites standard)")
        if len(set(self.suites)) != len(self.suites):
            raise ValueError(f"suites listed twice: {list(self.suites)}")
        bad = [s for s in self.suites if s not in SUITES]
        if bad:
            raise ValueError(f"unknown evaluation suite(s) {bad}; known: {list(SUITES.names())}")

    def _validate_choices(self) -> None:
        """The presets, where and how jobs run, and the sizes."""
        if self.edit_preset not in ("fast", "paper"):
            raise ValueError(f"edit_preset must be 'fast' or 'paper', got {self.edit_preset!r}")
        if self.eval_preset not in ("small", "full"):
            raise ValueError(f"eval_preset must be 'small' or 'full', got {self.eval_preset!r}")
        if self.localize_on not in ("auto", "forget", "known"):
            raise ValueError(f"localize_on must be 'auto', 'forget' or 'known', got {self.localize_on!r}")
        from factlens.localization.registry import check_localize_options

        check_localize_options(self.localize_options)
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor must be 'local' or 'ray', got {self.executor!r}")
        if self.dtype not in MODEL_DTYPES:
            raise ValueError(f"dtype must be one of {list(MODEL_DTYPES)}, got {self.dtype!r}")
        if self.executor == "ray" and str(self.device).startswith("cuda") and not self.gpus_per_job > 0:
            # Ray hides every GPU from a task that reserved none: each job would fail to load on cuda
            raise ValueError("--executor ray with --device cuda needs --gpus-per-job > 0 (e.g. 1): Ray shows a job "
                             "only the GPUs it reserved")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a whole number >= 1 (worker processes of the local executor), "
                             f"got {self.workers!r}")
        for name, default in (("forget_size", "the task's default"), ("param_budget", "the FLU mask size"),
                              ("max_facts", "all facts")):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a whole number >= 1 (or left out: {default}), got {v!r}")

    def _validate_inputs(self) -> None:
        """What needs the options together or the world: unused options, missing files, checks that
        would fail late, the model's name and the edit/eval overrides."""
        unused = self.unused_options()
        if unused:
            raise ValueError("options this run does not use (remove them):\n  " + "\n  ".join(unused))
        missing = [f"{k}={v!r}: no such file or folder ({_where(v)})" for k, v in self.input_files().items()
                   if _looks_local(v) and not Path(v).expanduser().exists()]
        if missing:
            raise ValueError("input files not found (relative paths start from the working folder):\n  "
                             + "\n  ".join(missing))
        from factlens.runner.config_checks import late_failures

        late = late_failures(self)
        if late:
            raise ValueError("bad settings (found before any file is written):\n  " + "\n  ".join(late))
        if self.model != "planted":
            from factlens.models import check_model_name

            check_model_name(self.model)
        for seed in self.seeds[:1]:  # bad edit/eval overrides fail here, before any file is written
            try:  # the runner runs registered methods and objectives only: every table must name one
                self.edit_config(seed).check_tables(None, None)
            except ValueError as e:  # edit_config's own errors already name the options
                raise (e if str(e).startswith("bad edit option") else
                       ValueError(f"bad edit option(s) {self.edit.to_dict()}: {e}")) from e
            self.eval_config(seed)

    def unused_options(self) -> list[str]:
        """Options that are set but that this task / executor / suite selection never reads."""
        from factlens.runner.config_checks import unused_options

        return unused_options(self)

    # serialization
    def _validate_methods(self) -> None:
        from factlens.editing.registry import EDIT_METHODS, OBJECTIVES

        for name, reg in (("methods", EDIT_METHODS), ("objectives", OBJECTIVES)):
            vals = getattr(self, name)
            bad = [v for v in vals if v not in reg]
            if bad:
                raise ValueError(f"unknown {name} {bad}; known: {list(reg.names())}")
            if len(set(vals)) != len(vals):
                raise ValueError(f"{name} listed twice: {list(vals)}")
        if not self.methods:
            raise ValueError("give at least one edit method (e.g. --methods finetune)")
        # unit names are "<localization>+<method>+<objective>" (split_unit): a name with "+", or one that is
        # both a method and an objective, would be read as another unit (an edit method called npo ran
        # instead of fine-tuning on the npo objective)
        both = sorted(set(EDIT_METHODS.names()) & set(OBJECTIVES.names()))
        if both:
            raise ValueError(f"{both} name both an edit method and an objective; unit names could not tell "
                             "them apart: rename one of the entries")
        plus = [n for n in (*self.localizations, *EDIT_METHODS.names(), *OBJECTIVES.names()) if "+" in n]
        if plus:
            raise ValueError(f"names with '+' cannot be part of a unit name ('<localization>+<method>+<objective>'): "
                             f"{plus}; rename them")
        for m in self.methods:
            entry = EDIT_METHODS.get(m)
            for o in self.objectives or (self.default_objective,):
                if o not in entry.supported_objectives():
                    raise ValueError(f"edit method {m!r} does not support objective {o!r} (it supports "
                                     f"{list(entry.supported_objectives())}); run it in a separate --out, or drop it")

    @property
    def default_objective(self) -> str:
        """The task's own objective: ``unlearn`` for Sports-Unlearning, ``inject`` for the editing tasks."""
        return default_objective(self.task)

    def units(self) -> tuple[str, ...]:
        """The names of the compared units: localization x method x objective (see ``objectives``).

        Example:
            >>> RunConfig(task="planted", model="planted", localizations=("flu", "random"),
            ...           objectives=("inject", "npo")).units()
            ('flu', 'flu+npo', 'random', 'random+npo')
        """
        return unit_names(self.localizations, self.methods, self.objectives, default_objective=self.default_objective)

    def split_unit(self, unit: str) -> tuple[str, str, str]:
        """``(localization, method, objective)`` of a unit name from :meth:`units`."""
        return split_unit(unit, default_objective=self.default_objective)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples as lists, ``edit`` / ``eval`` as nested tables, the
        read-only option tables as plain dicts the caller may change)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = (v.to_dict() if isinstance(v, Overrides) else list(v) if isinstance(v, tuple)
                         else _plain(v) if isinstance(v, Mapping) else copy.deepcopy(v))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """Build from a mapping (keys may use dashes); unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        norm: dict[str, Any] = {}
        for k, v in d.items():
            key = str(k).replace("-", "_")
            if key not in known:
                raise ValueError(f"unknown config key {k!r}; known keys: {sorted(known)}")
            norm[key] = v
        return cls(**norm)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def experiment_dict(self) -> dict[str, Any]:
        """The fields that decide results (everything but scope and execution fields)."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS | SCOPE_FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    # resolved settings of the steps
    def eval_overrides(self) -> dict[str, Any]:
        """The ``EvalConfig`` overrides of this run (defaults for the model, then ``eval``), as nested tables."""
        base: dict[str, Any] = {}
        if self.eval_preset == "small":
            base = PLANTED_EVAL_DEFAULTS if self.model == "planted" else CPU_EVAL_DEFAULTS
        return Overrides(self.eval.config_type, base).merged(self.eval).to_dict()

    def edit_config(self, seed: int):
        """The ``factlens.editing.EditConfig`` of this run for ``seed``."""
        from factlens.editing import EditConfig
        from factlens.tasks import TASKS

        paper_steps = next((e.paper_steps for e in TASKS if e.name == self.task), None)  # "planted" has none
        planted = self.model == "planted" and self.edit_preset == "fast"
        # the CPU preset checkpoints the edit's blocks (not the planted model's: it is tiny): the
        # non-localized unit's edit set the main job's peak, 5.07 -> 4.72 GB on Gemma 3 270M for
        # 18 % more of that edit's CPU time, with the same gradients (docs/performance.md)
        base = (EditConfig.fast(checkpoint=not planted) if self.edit_preset == "fast"
                else EditConfig(steps=paper_steps) if paper_steps is not None else EditConfig())
        over = Overrides(EditConfig, PLANTED_EDIT_DEFAULTS if planted else {}).merged(self.edit)
        try:
            return over.merged({"seed": seed}).apply(base)
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad edit option(s) {self.edit.to_dict()}: {e}") from e

    def eval_config(self, seed: int):
        """The ``factlens.evaluation.EvalConfig`` of this run for ``seed``."""
        from factlens.evaluation import EvalConfig

        try:
            return Overrides(EvalConfig, self.eval_overrides()).merged({"seed": seed}).apply(EvalConfig())
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad eval option(s) {self.eval.to_dict()}: {e}") from e

    def input_files(self) -> dict[str, str]:
        """The input files of this run by option name (``data``, ``eval.text.source``...), as given."""
        found = {"data": self.data, "mcq_data": self.mcq_data, "eval.text.source": self.eval.get_path("text.source"),
                 "eval.side_effects.mmlu_source": self.eval.get_path("side_effects.mmlu_source"),
                 "edit.sft_source": self.edit.get("sft_source")}
        methods = self.edit.get_path("methods") or {}
        for name, table in sorted(methods.items()):  # a method's own covariance text (ROME, MEMIT, AlphaEdit)
            if name in self.methods and isinstance(table, Mapping) and table.get("text_source") is not None:
                found[f"edit.methods.{name}.text_source"] = table["text_source"]
        return {k: str(v) for k, v in found.items() if v is not None}

    def input_hashes(self) -> dict[str, dict[str, Any]]:
        """Content hashes of :meth:`input_files` (:func:`~factlens.runner.inputs.hash_input`), compared on resume."""
        return {k: hash_input(v) for k, v in self.input_files().items()}

    def resolved(self) -> dict[str, Any]:
        """The exact edit/eval settings (the first seed shown; each run uses its own seed).

        ``edit.methods`` holds every field of each edit method of the run that has settings of
        its own (:func:`~factlens.runner.method_settings.resolved_method_settings`), defaults
        included, so that a default changed by a later version is seen when a folder resumes; so does
        ``eval.other_suites`` for the suites run (:meth:`~factlens.evaluation.EvalConfig.with_suite_defaults`).
        """
        seed = self.seeds[0]
        out: dict[str, Any] = {}
        try:
            ec = self.edit_config(seed)
            out["edit"] = {**_as_dict(ec), "methods": resolved_method_settings(
                ec, self.methods, self.eval.get_path("text.source"))}
        except ImportError as e:  # editor not installed: still record what was asked
            out["edit"] = {"error": str(e)}
        try:
            out["eval"] = _as_dict(self.eval_config(seed).with_suite_defaults(self.suites))
        except ImportError as e:
            out["eval"] = {"error": str(e)}
        return out


def _as_dict(x: Any) -> dict[str, Any]:
    if hasattr(x, "to_dict"):
        d = x.to_dict()
    else:
        d = dataclasses.asdict(x)
    return json.loads(json.dumps(d, default=str))


def split_unit(unit: str, *, default_objective: str = "inject") -> tuple[str, str, str]:
    """``(localization, method, objective)`` of a unit name (``"flu"``, ``"flu+rome"``, ``"flu+npo"``).

    Example:
        >>> split_unit("nonlocalized+npo", default_objective="unlearn")
        ('nonlocalized', 'finetune', 'npo')
        >>> split_unit("flu+memit")
        ('flu', 'memit', 'inject')
    """
    from factlens.editing.registry import EDIT_METHODS, OBJECTIVES

    loc, *rest = unit.split("+")
    method, objective = "finetune", default_objective
    for part in rest:
        if part in EDIT_METHODS:
            method = part
        elif part in OBJECTIVES:
            objective = part
        else:
            raise ValueError(f"unit {unit!r}: {part!r} is neither an edit method {list(EDIT_METHODS.names())} nor an "
                             f"objective {list(OBJECTIVES.names())}")
    return loc, method, objective


def default_objective(task: str) -> str:
    """The objective of a task name: ``unlearn`` for Sports-Unlearning, ``inject`` for the editing tasks."""
    from factlens.tasks import TASKS

    return next((e.objective for e in TASKS if task in (e.name, e.task_name)), "inject")  # planted: inject


def unit_names(localizations, methods=("finetune",), objectives=(), *, default_objective: str = "inject") -> tuple[str, ...]:
    """Unit names of localization x method x objective (no suffix for the defaults).

    Example:
        >>> unit_names(["flu"], ["finetune", "memit"])
        ('flu', 'flu+memit')
    """
    out = []
    for loc in localizations:
        for m in methods or ("finetune",):
            for o in objectives or (default_objective,):
                out.append("+".join([loc] + ([m] if m != "finetune" else []) + ([o] if o != default_objective else [])))
    return tuple(out)


def merged_objectives(old: "RunConfig", new: "RunConfig") -> tuple[str, ...]:
    """The objectives of a resumed run: the stored ones and the new ones, in order.

    An empty tuple means the task's own objective, so it counts as that objective when the
    other side names some: a default-objective run resumed with ``--objectives npo`` keeps
    its default units (``objectives=("npo",)`` alone would drop them from the configured
    units, and a later resume that adds a seed would run only the npo units).

    Example:
        >>> a = RunConfig(task="planted", model="planted")
        >>> merged_objectives(a, a.replace(objectives=("graddiff",)))
        ('inject', 'graddiff')
        >>> merged_objectives(a, a)
        ()
    """
    if not old.objectives and not new.objectives:
        return ()
    return tuple(dict.fromkeys((old.objectives or (old.default_objective,)) + (new.objectives or (new.default_objective,))))


# Kept importable from here (it lived in this module before the module was split).
from factlens.runner.stored import upgrade_stored  # noqa: E402,F401
