"""Pilot: do ROME / MEMIT with their defaults edit Gemma 3 270M? 4 athletes, standard suite.

Run: ``python benchmarks/value_edit_pilot.py memit 2,3,4`` (MEMIT at the FLU's MLPs) or
``python benchmarks/value_edit_pilot.py rome 3`` (ROME at causal tracing's top MLP); an optional
third argument is a JSON table of the method's settings (``EditConfig.methods[method]``).
Prints one JSON line: edit CPU seconds, edit and maintain accuracy, per-fact / per-layer meta.
4 known athletes of each of basketball, baseball and football are drawn (seed 0): 4 edited to
another sport, 8 retain, 8 maintain. Results: docs/methods/rome.md and memit.md.
"""
import json, sys, time
import torch
torch.set_num_threads(1)
import factlens
from factlens.components import Mask
from factlens.data import sports_facts, filter_known
from factlens.editing import EditConfig
from factlens.evaluation import evaluate, EvalConfig
from factlens.tasks import sports_athlete_editing

if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
    sys.exit(f"usage: {sys.argv[0]} rome|memit LAYERS [SETTINGS_JSON]  (e.g. memit 1,2 '{{\"v_lr\": 0.5}}')")
method, layers = sys.argv[1], sys.argv[2]
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
_BARS_OFF = factlens.progress(False)  # bars off for the rest of the process; kept referenced: collected, the
_BARS_OFF.__enter__()  # manager's generator was closed and put the bars back on at once
model = factlens.load_model()
sp = sports_facts()
idx = [i for s in ("basketball", "baseball", "football") for i in [j for j, r in enumerate(sp) if r.answer == s][:8]]
known = filter_known(model, sp.subset(idx))
task = sports_athlete_editing(known, n_forget=4, n_retain=8, n_maintain=8, seed=0)
mask = Mask.from_labels([f"L{l}.mlp" for l in layers.split(",")])
ec = EditConfig(methods={method: extra}) if extra else EditConfig()
t0 = time.process_time()
res = factlens.edit(model, mask, task, method=method, config=ec, inplace=True)
t_edit = time.process_time() - t0
ev = evaluate(model, task, original=None, suites=["standard"], config=EvalConfig(batch_size=16))
s = ev["standard"]
print(json.dumps({"method": method, "layers": layers, "extra": extra, "edit_cpu_s": t_edit,
                  "edit_accuracy": s["edit_accuracy"].value, "maintain_accuracy": s["maintain_accuracy"].value,
                  "facts": res.meta.get("facts"), "layers_meta": res.meta.get("layers")}, default=str))
res.revert()
