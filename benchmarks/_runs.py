"""One unit of a finished run folder, prepared as the runner prepares it (for the sweep benchmarks).

``open_unit`` reads the folder's config and the unit's stored record and loads the model, the
facts and the task of the seed with the runner's own ``prepare``; the sweeps then re-create
the unit's edit (``relearning_sweep.py``) or parts of it (``memit_sweep.py``) and check that
the row with the run's own settings reproduces the stored numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunUnit:
    """A unit of a run folder: its config, seed, stored record, prepared seed, mask, method and objective."""

    config: Any
    seed: int
    record: dict
    prep: Any
    mask: Any
    method: str
    objective: str | None

    def stored_metrics(self) -> dict[str, float]:
        """``{metric name: value}`` over every suite of the stored record."""
        ev = self.record.get("eval")
        suites = ev.get("suites", {}) if isinstance(ev, dict) else {}
        return {m["name"]: m["value"] for s in suites.values() for m in s.get("metrics", [])}


def open_unit(run_dir: Path, unit: str, seed: int | None = None) -> RunUnit:
    """Read ``run_dir``'s config and the record of ``unit`` (seed: the run's first by default) and
    prepare the seed; the random generators are seeded as the runner seeds them before an edit."""
    from factlens.components import Mask
    from factlens.runner.config import RunConfig
    from factlens.runner.executor import read_json
    from factlens.runner.pipeline import _seed_everything, prepare

    cfg = RunConfig.from_dict(read_json(Path(run_dir) / "run_config.json")["config"])
    seed = cfg.seeds[0] if seed is None else seed
    path = Path(run_dir) / "runs" / f"seed{seed}" / f"{unit}.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: unit {unit!r} of seed {seed} has not finished in {run_dir}")
    rec = read_json(path)
    _, method, objective = cfg.split_unit(unit)
    prep = prepare(cfg, seed)
    _seed_everything(seed)
    return RunUnit(cfg, seed, rec, prep, Mask.from_dict(rec["mask"]), method,
                   None if objective == cfg.default_objective else objective)
