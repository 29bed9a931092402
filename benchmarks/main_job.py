"""Benchmark: one (localization, seed) of the main job, stage by stage, before and after the speed-ups.

Runs what ``factlens run sports-athlete-editing --model gemma-3-270m`` runs for one
localization and one seed, with the runner's own functions (``prepare``, ``plan_budget``,
``_mask_and_scores``, ``_edit``, ``evaluate``, revert), and prints per stage: wall seconds,
process CPU seconds (``time.process_time``: all threads of this process, comparable on a
loaded machine) and the peak resident set size (``benchmarks/_memory.py``, sampled every
millisecond).

Threads are pinned (``--threads``, default 1) so that before/after compare the same work.
``--variants`` runs the job once per variant, each in a fresh subprocess (so that each one's
memory is its own), with optimizations turned off/on (see ``VARIANTS``), and prints the max
|difference| of every metric between them.

Run:
``python benchmarks/main_job.py [--localization random] [--seed 0] [--suites standard,relearning]
[--variants before,after] [--profile DIR]``

``--scaling``: the same stages (edit steps, a couple of suites) on random-weight
``HookedTransformer`` s of growing size on CPU (peak memory and time per stage against the
parameter count).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from _memory import PeakRSS  # benchmarks/_memory.py (the script's folder is on sys.path)

GB = 1e9
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


class Stages:
    """Per-stage wall seconds, process CPU seconds and peak RSS (absolute, bytes)."""

    def __init__(self, profile_dir: Path | None = None, prefix: str = "") -> None:
        self.rows: list[dict] = []
        self.profile_dir, self.prefix = profile_dir, prefix

    @contextmanager
    def stage(self, name: str):
        gc.collect()
        prof = cProfile.Profile() if self.profile_dir else None
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # the RSS leaves out GPU memory: its own peak
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem:
            t0, c0 = time.perf_counter(), time.process_time()
            if prof:
                prof.enable()
            try:
                yield
            finally:
                if prof:
                    prof.disable()
                    self.profile_dir.mkdir(parents=True, exist_ok=True)
                    prof.dump_stats(self.profile_dir / f"{self.prefix}{name}.prof")
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.synchronize()  # kernels run asynchronously: the stage ends when they do
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        row = {"stage": name, "wall_s": wall, "cpu_s": cpu, "peak_rss_gb": mem.peak / GB, "start_rss_gb": mem.start / GB}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            row["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / GB
        self.rows.append(row)
        gpu_note = f", GPU peak {row['peak_cuda_gb']:.2f} GB" if "peak_cuda_gb" in row else ""
        print(f"  {self.prefix}{name}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {mem.peak / GB:.2f} GB{gpu_note}",
              flush=True)

    def table(self, title: str) -> str:
        lines = [f"#### {title}", "", "| stage | wall s | CPU s | peak RSS GB |", "|---|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r['stage']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_gb']:.2f} |")
        tot = [r for r in self.rows if not r["stage"].startswith("prepare")]
        lines.append(f"| **total (without prepare)** | {sum(r['wall_s'] for r in tot):.1f} | "
                     f"{sum(r['cpu_s'] for r in tot):.1f} | {max((r['peak_rss_gb'] for r in tot), default=0.0):.2f} |")
        return "\n".join(lines)


def metric_values(ev) -> dict[str, float]:
    """Every metric value (and baseline) of an EvalResult, flattened."""
    out = {}
    for suite, res in ev.suites.items():
        for m in res.metrics:
            out[f"{suite}.{m.name}"] = m.value
            if m.baseline is not None:
                out[f"{suite}.{m.name}.baseline"] = m.baseline
    return out


def value_diffs(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """``|a - b|`` per metric both hold: 0 where both are NaN, inf where only one is (``max`` of a
    list with a NaN in it can be 0.0, so a variant that produced NaN read as identical).

    Example:
        >>> value_diffs({"x": 1.0, "y": float("nan"), "z": float("nan")}, {"x": 1.5, "y": 2.0, "z": float("nan")})
        {'x': 0.5, 'y': inf, 'z': 0.0}
    """
    out = {}
    for k in a.keys() & b.keys():
        x, y = a[k], b[k]
        if x is None or y is None:
            continue
        nx, ny = x != x, y != y
        out[k] = 0.0 if nx and ny else float("inf") if nx or ny else abs(x - y)
    return dict(sorted(out.items()))


def run_config(args):
    from factlens.runner.config import RunConfig

    ev = {}
    suites = tuple(args.suites.split(",")) if args.suites else None
    readers = {"side_effects", "relearning", "unrelated_finetune"}  # else the run refuses an unused text source
    if (SHARED / "wikitext2" / "test.txt").exists() and (suites is None or readers & set(suites)):
        ev["text.source"] = str((SHARED / "wikitext2" / "test.txt").resolve())
    if (SHARED / "mmlu" / "dev").exists() and (suites is None or "side_effects" in suites):  # else the run refuses it
        ev["side_effects.mmlu_source"] = str((SHARED / "mmlu" / "dev").resolve())
    kw = {"suites": suites} if suites else {}
    return RunConfig(task="sports-athlete-editing", model=args.model, localizations=(args.localization,),
                     forget_size=args.forget_size, seeds=(args.seed,), eval=ev, show_progress=False, **kw)


def one_job(cfg, seed: int, loc: str, ws, stages: Stages, suites, *, offload: bool = True,
            originals_offload: bool = True) -> dict:
    """One (localization, seed) as ``run_localization`` does it, timed stage by stage.

    ``offload``: the edit's record goes to a mapped file in ``cfg.out`` while evaluating, as
    the runner does (``pipeline._offload_record``). ``originals_offload``: the editor keeps its
    saved originals in a mapped file there too (``edit(..., offload=cfg.out)``, as the runner)."""
    from factlens.evaluation import evaluate
    from factlens.runner import pipeline as P

    if not originals_offload:  # the editor's originals in memory: the runner's edit() call without offload
        import factlens.editing.editor as editor

        real_edit = editor.edit

        def edit_in_memory(*a, offload=None, **kw):
            return real_edit(*a, **kw)

        editor.edit = edit_in_memory
    prep = P.prepare(cfg, seed, workspace=ws)
    with stages.stage("localize"):
        P._seed_everything(seed)
        plan = P.plan_budget(prep, cfg, seed, need_budget=loc not in P.UNBUDGETED)
        if "mechanisms" in suites:
            plan["mechanisms"] = P.plan_mechanisms(prep, cfg, seed, plan)
        mask, scores, *_ = P._mask_and_scores(prep, cfg, seed, loc, plan)
    with stages.stage("edit"):
        P._seed_everything(seed)
        res = P._edit(prep, mask, cfg, seed)
        offloaded = P._offload_record(res, cfg) if offload else 0
        P.release_memory()
        prep.pristine.show(res)  # as run_localization: the unedited model's view of what the edit changed
        print(f"  edit record offloaded: {offloaded / GB:.3f} GB", flush=True)
    results = {}
    try:
        for suite in suites:
            with stages.stage(f"evaluate.{suite}"):
                P._seed_everything(seed)
                ev = evaluate(prep.model, prep.task, original=prep.original, suites=[suite], config=cfg.eval_config(seed),
                              mask=mask, mechanisms=P._mechanisms(plan), edit_result=res, baselines=prep.baselines,
                              show_progress=False)
            results[suite] = ev.suites[suite]
    finally:
        with stages.stage("revert"):
            res.revert()
            restore = P.check_restored(prep.model, prep.original)
            restore["changed"] = prep.pristine.changed()
            prep.pristine.reset()
    from factlens.evaluation.result import EvalResult

    return {"metrics": metric_values(EvalResult(results)), "restore": restore,
            "edit_loss": [h["loss"] for h in res.history], "record_offloaded_gb": offloaded / GB}


#: What each variant turns on: shared-prefix reuse (factlens.prefix), the unedited model as an
#: OriginalView sharing the model's weights (factlens.runner.pristine) instead of a deepcopy,
#: the weight layout without per-forward copies (factlens.layout) and the editor's two backward
#: passes per step (factlens.editing.training.train_step; "before" uses the earlier single one),
#: and per-block gradient checkpointing in the edit and the relearning attack
#: (EditConfig.checkpoint, RelearningConfig.checkpoint; "no-checkpoint" is "after" without it).
VARIANTS = {
    "before": {"prefix_reuse": False, "original": "copy", "layout": False, "two_pass": False, "checkpoint": False},
    "after": {"prefix_reuse": True, "original": "view", "layout": True, "two_pass": True, "checkpoint": True},
    "view-only": {"prefix_reuse": False, "original": "view", "layout": False, "two_pass": False, "checkpoint": False},
    "no-checkpoint": {"prefix_reuse": True, "original": "view", "layout": True, "two_pass": True, "checkpoint": False},
    # the edit's record kept in memory while the model is evaluated (EditResult.offload not called)
    "no-offload": {"prefix_reuse": True, "original": "view", "layout": True, "two_pass": True, "checkpoint": True,
                   "offload": False},
    # the runner's defaults without the CPU preset's edit checkpointing (the paper preset's; the CPU preset's
    # before 2026-12-07): checkpointing in the relearning attack only, the editor's originals and the edit's
    # record in mapped files, the unedited model fingerprinted once per worker
    "runner": {"prefix_reuse": True, "original": "view", "layout": True, "two_pass": True, "checkpoint": True,
               "edit_checkpoint": False},
    # the runner's CPU preset since 2026-12-07: the edit checkpointed too
    "runner-cpu": {"prefix_reuse": True, "original": "view", "layout": True, "two_pass": True, "checkpoint": True},
    # the runner as of 065880a: the editor's originals in memory, the unedited model fingerprinted at every evaluate()
    "runner-065880a": {"prefix_reuse": True, "original": "view", "layout": True, "two_pass": True, "checkpoint": True,
                       "edit_checkpoint": False, "originals_offload": False, "recheck": True},
    "merged-lora": {"prefix_reuse": True, "original": "view", "layout": True, "two_pass": True, "checkpoint": True,
                    "lora_forward": "merged"},
    "factored-lora": {"prefix_reuse": True, "original": "view", "layout": True, "two_pass": True, "checkpoint": True,
                      "lora_forward": "factored"},
    # the soft prompts without each prompt's own cached keys and values (only the shared prefix reused)
    "no-row-prefix": {"prefix_reuse": True, "row_prefix_reuse": False, "original": "view", "layout": True,
                      "two_pass": True, "checkpoint": True, "lora_forward": "factored"},
}


def _lora_forward(variant: dict) -> dict:
    """The variant's ``relearning.lora_forward`` override (none: the default)."""
    return {"relearning.lora_forward": variant["lora_forward"]} if "lora_forward" in variant else {}


def one_backward_step(state, step):
    """``train_step`` as it was before the two-pass backward (one summed backward per micro-batch)."""
    import importlib
    import math

    training = importlib.import_module("factlens.editing.training")
    cfg = state.config
    lr_now = cfg.lr * training.lr_factor(cfg, step)
    for g in state.optimizer.param_groups:
        g["lr"] = lr_now
    sums = dict.fromkeys(("loss", "loss_forget", "loss_retain", "loss_sft"), 0.0)
    for _ in range(cfg.grad_accum):
        terms = training.micro_batch_losses(state)
        loss = cfg.l_forget * terms["loss_forget"] + cfg.l_retain * terms["loss_retain"] + cfg.l_sft * terms["loss_sft"]
        values = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
        assert all(math.isfinite(v) for v in values.values())
        (loss / cfg.grad_accum).backward()
        for k, v in values.items():
            sums[k] += v / cfg.grad_accum
    training.masked_update(state)
    return {"step": step, **sums, "lr": lr_now}


@contextmanager
def applied(v: dict, model=None):
    """Inside the block: the variant's prefix reuse and train_step (and its layout on ``model``)."""
    import importlib

    from factlens.layout import contiguous_layout, linear_layout
    from factlens.prefix import prefix_reuse, row_prefix_reuse

    editor = importlib.import_module("factlens.editing.editor")
    real = editor.train_step
    if model is not None:
        (linear_layout if v["layout"] else contiguous_layout)(model)
    if not v["two_pass"]:
        editor.train_step = one_backward_step
    try:
        with prefix_reuse(v["prefix_reuse"]), row_prefix_reuse(v.get("row_prefix_reuse", True)):
            yield
    finally:
        editor.train_step = real


def run_variant(args) -> dict:
    """One variant in this process: the stage table, the metric values and the process's peak RSS."""
    import resource

    from factlens.runner.pipeline import Workspace, prepare

    torch.set_num_threads(args.threads)
    v = VARIANTS[args.variant]
    cfg = run_config(args)
    ck = bool(v.get("checkpoint", True))
    cfg = cfg.replace(edit={**cfg.edit.to_dict(), "checkpoint": bool(v.get("edit_checkpoint", ck))},
                      out=tempfile.mkdtemp(prefix="factlens-bench-"),
                      eval={**cfg.eval.to_dict(), "relearning.checkpoint": ck, **_lora_forward(v)})
    suites = list(cfg.suites)
    print(f"variant {args.variant} {v}; torch threads {torch.get_num_threads()}; suites {suites}; "
          f"localization {args.localization}; seed {args.seed}", flush=True)
    prof = Path(args.profile) if args.profile else None
    stages = Stages(prof, prefix=f"{args.variant}.")
    with applied(v):
        ws = Workspace(original=v["original"], fast_layout=v["layout"])
        with stages.stage("prepare"):
            prepare(cfg, args.seed, workspace=ws)
        model = ws.models(cfg)[0]
        model_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / GB
        if v.get("recheck", False):  # the unedited model fingerprinted at every evaluate(), as before 2026-12-01
            ws.baselines().recheck = True
        out = one_job(cfg, args.seed, args.localization, ws, stages, suites, offload=v.get("offload", True),
                      originals_offload=v.get("originals_offload", True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
    title = f"{args.variant} ({args.localization}, seed {args.seed}, {args.threads} thread(s))"
    print(f"restore: {out['restore']}; model parameters {model_gb:.2f} GB; process peak RSS {peak:.2f} GB")
    return {"variant": args.variant, "settings": v, "rows": stages.rows, "table": stages.table(title),
            "metrics": out["metrics"], "restore": out["restore"], "model_gb": model_gb, "process_peak_rss_gb": peak,
            "edit_loss": out["edit_loss"], "record_offloaded_gb": out["record_offloaded_gb"]}


def main_job(args) -> None:
    """Each variant in a fresh subprocess (so that one variant's memory never counts for the next)."""
    import subprocess

    results = []
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
        out = Path(args.json or "main_job.json").with_suffix(f".{variant}.json")
        cmd = [sys.executable, __file__, "--variant", variant, "--out-json", str(out)] + _forward(args)
        subprocess.run(cmd, check=True)
        results.append(json.loads(out.read_text()))
    print()
    for r in results:
        print(r["table"])
        print(f"model parameters {r['model_gb']:.2f} GB; whole-process peak RSS {r['process_peak_rss_gb']:.2f} GB "
              f"({r['process_peak_rss_gb'] / r['model_gb']:.1f}x the model)\n")
    base = results[0]["metrics"]
    for r in results[1:]:
        b = r["metrics"]
        diffs = value_diffs(base, b)
        worst = sorted(diffs.items(), key=lambda kv: -kv[1])[:8]
        print(f"max |{results[0]['variant']} - {r['variant']}| over {len(diffs)} metric values: "
              f"{max(diffs.values()) if diffs else float('nan'):.3g}; largest: {worst}; "
              f"only in one: {sorted(set(base) ^ set(b))}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def _forward(args) -> list[str]:
    out = ["--model", args.model, "--localization", args.localization, "--seed", str(args.seed),
           "--forget-size", str(args.forget_size), "--threads", str(args.threads)]
    if args.suites:
        out += ["--suites", args.suites]
    if args.profile:
        out += ["--profile", args.profile]
    return out


#: Model sizes of ``--scaling`` (random weights, Gemma 3 architecture; factlens.testing.shaped).
SCALING_SIZES = {
    "tiny": dict(window_size=4),
    "gemma3-270m/4": dict(n_layers=18, d_model=320, n_heads=2, d_head=256, d_mlp=1024, d_vocab=65536, global_every=6),
    "gemma3-270m": "GEMMA3_270M",
    "gemma3-1b": "GEMMA3_1B",
    # the paper's models' sizes (on Gemma 3's architecture): for a GPU, e.g.
    # --scaling --sizes gemma2-9b,llama3-8b --device cuda --dtype bfloat16 --optimizer adamw8bit --variants runner
    "gemma2-9b": "GEMMA2_9B",
    "llama3-8b": "LLAMA3_8B",
}


def scaling_one(args) -> dict:
    """The edit and a few suites on one random-weight model size (run in its own subprocess)."""
    import resource

    from factlens.components import Mask
    from factlens.data import sports_facts
    from factlens.editing import EditConfig, edit
    from factlens.evaluation import EvalConfig, evaluate
    from factlens.evaluation.baseline_cache import BaselineCache
    from factlens.runner.pristine import OriginalView, PristineCopy
    from factlens.tasks import sports_athlete_editing
    from factlens.testing import shaped

    torch.set_num_threads(args.threads)
    v = VARIANTS[args.variant]
    size = SCALING_SIZES[args.size]
    kw = getattr(shaped, size) if isinstance(size, str) else size
    stages = Stages(Path(args.profile) if args.profile else None, prefix=f"{args.size}.{args.variant}.")
    with stages.stage("build"):
        model = shaped.gemma3_shaped(**{"window_size": 512, "n_ctx": 2048, **kw}, dtype=getattr(torch, args.dtype),
                                     device=args.device)
        if v["layout"]:
            from factlens.layout import linear_layout

            linear_layout(model)
        pristine = OriginalView(model) if v["original"] == "view" else PristineCopy(model)
    n_params = sum(p.numel() for p in model.parameters())
    model_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / GB
    task = sports_athlete_editing(sports_facts(), n_forget=16, seed=0, n_maintain=32)
    L = model.cfg.n_layers
    mask = Mask.from_labels([f"L{l}.mlp" for l in (L // 9, L // 9 + 1, L // 9 + 2)])  # 3 early MLPs, as FLU
    ck = bool(v.get("checkpoint", True))
    # the variant's edit settings as the main-job mode (and the runner) use them: checkpointing in the edit
    # only where the variant says so, the editor's originals and the edit's record in mapped files, the
    # unedited model fingerprinted once (they were ignored here: the edit ran checkpointed, kept both in
    # memory, and every evaluate() fingerprinted the model again)
    settings = {"edit_checkpoint": bool(v.get("edit_checkpoint", ck)), "originals_offload": v.get("originals_offload", True),
                "offload": v.get("offload", True), "recheck": v.get("recheck", False)}
    ecfg = EditConfig.fast(steps=args.scaling_steps, checkpoint=settings["edit_checkpoint"], optimizer=args.optimizer)
    vcfg = EvalConfig.from_dict(_cpu_eval()).override({"relearning.steps": args.scaling_steps,
                                                       "soft_prompts.steps": args.scaling_steps,
                                                       "relearning.checkpoint": ck, **_lora_forward(v)})
    cache = BaselineCache(recheck=settings["recheck"])
    if not settings["recheck"]:
        cache.bind(pristine.view)
    folder = tempfile.TemporaryDirectory(prefix="factlens-scaling-")
    with applied(v), folder:
        with stages.stage("edit"):
            res = edit(model, mask, task, config=ecfg, inplace=True, show_progress=False,
                       offload=folder.name if settings["originals_offload"] else None)
            if settings["offload"]:
                res.offload(folder.name)
            pristine.show(res)
        for suite in args.scaling_suites.split(","):
            with stages.stage(f"evaluate.{suite}"):
                evaluate(model, task, original=pristine.view, suites=[suite], config=vcfg, mask=mask, baselines=cache,
                         show_progress=False)
        with stages.stage("revert"):
            res.revert()
            pristine.reset()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
    print(f"{args.size}: {n_params / 1e9:.2f}B parameters, {model_gb:.2f} GB; process peak RSS {peak:.2f} GB", flush=True)
    return {"size": args.size, "variant": args.variant, "n_params": n_params, "model_gb": model_gb, "rows": stages.rows,
            "process_peak_rss_gb": peak, "steps": args.scaling_steps, "device": args.device, "dtype": args.dtype,
            "optimizer": args.optimizer, "settings": settings}


def _cpu_eval() -> dict:
    from factlens.runner.config import CPU_EVAL_DEFAULTS

    return dict(CPU_EVAL_DEFAULTS)


def scaling(args) -> None:
    """``--scaling``: each (size, variant) in a fresh subprocess; a table of time and peak memory per stage."""
    import subprocess

    results = []
    for size in args.sizes.split(","):
        for variant in args.variants.split(","):
            out = Path(args.json or "scaling.json").with_suffix(f".{size.replace('/', '_')}.{variant}.json")
            cmd = [sys.executable, __file__, "--scaling-one", "--size", size, "--variant", variant, "--out-json", str(out),
                   "--threads", str(args.threads), "--scaling-steps", str(args.scaling_steps),
                   "--scaling-suites", args.scaling_suites, "--device", args.device, "--dtype", args.dtype,
                   "--optimizer", args.optimizer] + (["--profile", args.profile] if args.profile else [])
            subprocess.run(cmd, check=True)
            results.append(json.loads(out.read_text()))
    stages = [r["stage"] for r in results[0]["rows"]]
    gpu = results[0].get("device", "cpu") != "cpu"  # the model lives on the GPU: host memory says little of it
    head = ("| size | variant | parameters | model GB | " + " | ".join(stages) + " | process peak GB | "
            + ("GPU peak / model |" if gpu else "(peak - empty process) / model |"))
    lines = [head, "|" + "---|" * (len(stages) + 6)]
    for r in results:
        cells = [(f"{x['wall_s']:.1f} s wall, GPU {x['peak_cuda_gb']:.2f} GB, " if "peak_cuda_gb" in x else "")
                 + f"{x['cpu_s']:.1f} s, {x['peak_rss_gb']:.2f} GB" for x in r["rows"]]
        lines.append(f"| {r['size']} | {r['variant']} | {r['n_params'] / 1e9:.2f}B | {r['model_gb']:.2f} | "
                     + " | ".join(cells) + f" | {r['process_peak_rss_gb']:.2f} | " + _ratio_cell(r, gpu))
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def _ratio_cell(r: dict, gpu: bool) -> str:
    """The peak against the model's size: GPU memory on a GPU, host memory over the empty process on CPU."""
    if gpu:
        return f"{max(x.get('peak_cuda_gb', 0.0) for x in r['rows']) / r['model_gb']:.2f}x |"
    return f"{(r['process_peak_rss_gb'] - r['rows'][0]['start_rss_gb']) / r['model_gb']:.2f}x |"


def job_arguments(ap: argparse.ArgumentParser) -> None:
    """The options naming one (localization, seed) job, shared with ``main_job_ab.py``."""
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--localization", default="random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--forget-size", type=int, default=16)
    ap.add_argument("--suites", default=None, help="comma-separated suites (default: the runner's)")
    ap.add_argument("--threads", type=int, default=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    job_arguments(ap)
    ap.add_argument("--variants", default="before,after", help="comma-separated names of VARIANTS, each run in a "
                    "fresh subprocess, compared metric by metric with the first")
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: run one variant here
    ap.add_argument("--out-json", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--profile", default=None, help="folder for one cProfile file per stage")
    ap.add_argument("--json", default=None, help="write tables and metric values to this file")
    ap.add_argument("--scaling", action="store_true", help="random-weight models of growing size (SCALING_SIZES)")
    ap.add_argument("--sizes", default="gemma3-270m/4,gemma3-270m,gemma3-1b", help="--scaling: comma-separated sizes")
    ap.add_argument("--scaling-steps", type=int, default=2, help="--scaling: edit / relearning / soft-prompt steps")
    ap.add_argument("--scaling-suites", default="standard,side_effects,relearning", help="--scaling: suites")
    ap.add_argument("--device", default="cpu", help="--scaling: where the random models run (e.g. cuda)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="--scaling: weights")
    ap.add_argument("--optimizer", default="adamw", choices=("adamw", "adamw8bit"),
                    help="--scaling: the edit's optimizer (adamw8bit: bitsandbytes, CUDA only)")
    ap.add_argument("--scaling-one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not (args.scaling or args.scaling_one) and (args.device, args.dtype, args.optimizer) != ("cpu", "float32", "adamw"):
        ap.error("--device, --dtype and --optimizer apply to --scaling only (the main-job mode runs the runner's model)")
    if args.scaling_one:
        Path(args.out_json).write_text(json.dumps(scaling_one(args), indent=1))
    elif args.scaling:
        scaling(args)
    elif args.variant:
        Path(args.out_json).write_text(json.dumps(run_variant(args), indent=1))
    else:
        main_job(args)


if __name__ == "__main__":
    from factlens.progress_bars import progress

    with progress(False):  # no bars in the timings (variant subprocesses run this too)
        main()
