"""The runner's default tables: the paper's localizations and suites, the task names, the CPU
and planted-model presets and the default localization options (split from
:mod:`factlens.runner.config`, which re-exports them, to keep it small).
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["DEFAULT_LOCALIZATIONS", "ALL_SUITES", "TASK_NAMES", "EXECUTION_FIELDS", "SCOPE_FIELDS", "MODEL_DTYPES",
           "SMALL_N_MAINTAIN", "DEFAULT_LOCALIZE_OPTIONS", "on_default_localize_options", "CPU_EVAL_DEFAULTS",
           "PLANTED_EDIT_DEFAULTS", "PLANTED_EVAL_DEFAULTS"]

#: The paper's six localizations compared in Table 1.
DEFAULT_LOCALIZATIONS: tuple[str, ...] = (
    "flu", "causal_tracing", "attribution_patching", "random", "all_mlps", "nonlocalized",
)
#: The suites of a default run (``mechanisms`` uses each localization's mask). The attacks of
#: issue 14 (``quantization``, ``update_size``, ``unrelated_finetune``, ``direction_ablation``)
#: are opt-in with ``--suites``: on Gemma 3 270M the quantization suite alone (three schemes,
#: edited model and quantized original) costs more than the whole default evaluation of one
#: localization (timings: docs/attacks.md).
ALL_SUITES: tuple[str, ...] = (
    "standard", "formats", "side_effects", "relearning", "probes", "soft_prompts", "mechanisms",
)
#: Task names accepted by ``factlens run`` (``planted``: sports-athlete-editing on the planted model).
TASK_NAMES: tuple[str, ...] = (
    "sports-athlete-editing", "full-sports-editing", "sports-unlearning", "counterfact-editing",
    "sequential-counterfact-editing", "planted",
)
EXECUTION_FIELDS: frozenset[str] = frozenset({"out", "executor", "workers", "ray_address", "gpus_per_job", "cpus_per_job",
                                              "show_progress"})
SCOPE_FIELDS: frozenset[str] = frozenset({"localizations", "seeds", "methods", "objectives"})
#: ``RunConfig.dtype`` values: the model's weight dtypes the runner loads.
MODEL_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")

#: With ``eval_preset="small"``, tasks keep at most this many held-out facts to measure
#: maintenance (every suite scores them, in every format; the other known facts feed the
#: retain loss), unless ``task_options`` sets ``n_maintain``/``n_retain``.
SMALL_N_MAINTAIN: int = 64
#: Localization options of the default run: causal tracing scores components only (the
#: layer x position residual traces cost ~4x more and no localization uses them) with 5
#: noise samples per fact instead of ROME's 10 (16 facts x 5 samples per component; halves
#: its ~3 CPU-minutes on Gemma 3 270M). Override with ``localize_options``.
DEFAULT_LOCALIZE_OPTIONS: dict[str, Any] = {"causal_tracing": {"include_resid": False, "n_samples": 5}}


def on_default_localize_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` localization options on top of :data:`DEFAULT_LOCALIZE_OPTIONS`, table by table.

    Like ``[edit]`` and ``[eval]``, a table names only what changes: ``n_samples = 4`` for
    causal tracing keeps the default ``include_resid = false`` instead of dropping it (which
    made the run trace the residual stream too, about 4x the time). Applying it to a table
    it made changes nothing (a stored folder's ``run_config.json`` holds such tables).
    """
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in DEFAULT_LOCALIZE_OPTIONS.items()}
    for k, v in given.items():
        out[k] = {**out[k], **v} if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


#: Small-but-real evaluation sizes for a CPU run of a ~270M model (``EvalConfig`` overrides,
#: recorded in the report).
CPU_EVAL_DEFAULTS: dict[str, Any] = {
    "batch_size": 16, "text": {"n_chunks": 16, "seq_len": 64}, "side_effects": {"n_mmlu": 57},
    "relearning": {"steps": 10, "batch_size": 8, "both_halves": False},
    "soft_prompts": {"steps": 25, "seeds": 1},
}
#: Edit settings for the planted model on top of ``EditConfig.fast()`` (its weights are O(1-10)).
PLANTED_EDIT_DEFAULTS: dict[str, Any] = {"lr": 1e-2, "n_sft_chunks": 8}
#: Evaluation sizes for the planted model (a smoke run in about a minute).
PLANTED_EVAL_DEFAULTS: dict[str, Any] = {
    "batch_size": 16, "text": {"n_chunks": 4, "seq_len": 16}, "side_effects": {"n_mmlu": 8},
    "relearning": {"steps": 5, "batch_size": 8, "both_halves": False},
    "soft_prompts": {"steps": 10, "seeds": 1},
}
