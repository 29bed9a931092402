"""Pre-registered comparisons: the tests fixed before the results exist, and their outcome.

A comparison is confirmatory only if its test was chosen before the numbers were seen: which
localizations against which reference, which metric decides (the *primary* family; the others
are *secondary*, a Holm family of their own), the unit (facts, or seeds: over draws), the
margin of the equivalence test and the direction the claim predicts. Chosen afterwards, the
same table can be made to say almost anything (the garden of forking paths). A
:class:`Preregistration` holds those choices and the time they were fixed; :meth:`Preregistration.save`
writes it as JSON and never over an existing file. After the run, :func:`confirm` runs exactly
the registered tests (:func:`factlens.verdicts`, one family at a time) and reads each verdict
against the predicted direction:

==============================  ===========================================================
``outcome``                     when (the claim predicts ``expected``: "lower" or "higher")
==============================  ===========================================================
``"supported"``                 significant in the predicted direction
``"supported, negligible"``     significant in the predicted direction, and also within the
                                margin: real but smaller than what was called negligible
``"contradicted"``              significant in the other direction
``"not supported (equivalent)"``  no difference as large as the margin
``"undecided"``                 neither (``mdd`` and ``bound`` say what the run could tell)
``"at chance"``, ``"not tested"``  as :func:`factlens.verdicts`
==============================  ===========================================================

The direction is the primary metrics' (a secondary metric may move the other way by the same
claim: the new sport's probe falls where the old sport's rises), so a secondary row's outcome is
its verdict, as is every row's without ``expected``. For run folders :func:`confirm` also
checks the registration's time against every unit's ``finished_at``: a registration written
after a result existed is reported (``before_results`` false) and warned about.

CLI: ``factlens preregister FILE --claim ... --localizations nonlocalized --primary METRIC
[--secondary ...] [--unit seed] [--margin 0.1] [--expect higher]`` and ``factlens confirm
RUN_DIR --prereg FILE``. Statistics: docs/statistics.md, "Pre-registered comparisons".
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from factlens.config import ConfigBase, check_numbers

__all__ = ["Preregistration", "confirm", "CONFIRM_COLUMNS", "OUTCOMES", "confirm_text"]

#: The values of :func:`confirm`'s ``outcome`` column where the registration predicts a direction.
OUTCOMES = ("supported", "supported, negligible", "contradicted", "not supported (equivalent)", "undecided",
            "at chance", "not tested")


def _now() -> str:
    """The runner's clock (UTC, ISO 8601 to the second): the time a unit's ``finished_at`` is compared with."""
    from factlens.runner.provenance import now

    return now()


@dataclass(frozen=True)
class Preregistration(ConfigBase):
    """The tests of a comparison, fixed before its results exist.

    Args:
        claim: The claim in words ("the FLU leaves less latent knowledge than non-localized
            fine-tuning").
        localizations: The units compared with ``reference`` (each its own Holm family, as in
            :func:`factlens.compare`).
        primary: The metric(s) that decide the claim: one Holm family.
        secondary: Further metrics, reported as a second Holm family (they cannot rescue a
            primary that fails).
        reference: The unit compared against.
        expected: The direction the claim predicts for localization minus reference on the
            primary metrics: ``"lower"``, ``"higher"`` or ``None`` (no direction: the outcome is
            the verdict, as it always is for the secondary metrics).
        unit: ``"fact"`` or ``"seed"`` (each seed's mean difference one unit: over draws).
        margin: The equivalence margin (the largest difference called negligible, on the
            metrics' scale; one for all registered metrics, so register metrics of one scale),
            or ``None`` (no equivalence test: "equivalent" cannot be an outcome).
        alpha: Family-wise level.
        command: The command that makes the results (for the record).
        written: When the choices were fixed: ISO 8601 with a time zone; now by default.

    Example:
        >>> p = Preregistration(claim="non-localized keeps more", localizations=("nonlocalized",),
        ...                     primary=("probe_true_accuracy_last",), expected="higher", unit="seed", margin=0.1,
        ...                     written="2026-12-08T01:18:00+00:00")
        >>> Preregistration.from_dict(p.to_dict()) == p
        True
        >>> p.replace(expected="up")
        Traceback (most recent call last):
        ...
        ValueError: Preregistration.expected must be 'lower', 'higher' or None (no direction), got 'up'
    """

    claim: str = ""
    localizations: tuple[str, ...] = ()
    primary: tuple[str, ...] = ()
    secondary: tuple[str, ...] = ()
    reference: str = "flu"
    expected: str | None = None
    unit: str = "fact"
    margin: float | None = None
    alpha: float = 0.05
    command: str = ""
    written: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        for name in ("localizations", "primary", "secondary"):
            v = getattr(self, name)
            if isinstance(v, str) or not all(isinstance(x, str) and x.strip() for x in v):
                raise ValueError(f"Preregistration.{name} must be a list of names, got {v!r}")
            object.__setattr__(self, name, tuple(v))
        check_numbers(self)
        if not isinstance(self.claim, str) or not self.claim.strip():
            raise ValueError("Preregistration.claim: say in words what the comparison is to decide")
        if not self.localizations or not self.primary:
            raise ValueError("Preregistration needs at least one localization and one primary metric")
        if overlap := sorted(set(self.primary) & set(self.secondary)):
            raise ValueError(f"Preregistration: {overlap} both primary and secondary; a metric is in one family")
        if self.reference in self.localizations:
            raise ValueError(f"Preregistration: the reference {self.reference!r} is also listed as a localization")
        if self.expected not in ("lower", "higher", None):
            raise ValueError(f"Preregistration.expected must be 'lower', 'higher' or None (no direction), "
                             f"got {self.expected!r}")
        if self.unit not in ("fact", "seed"):
            raise ValueError(f"Preregistration.unit must be 'fact' or 'seed', got {self.unit!r}")
        if self.margin is not None and not self.margin > 0:
            raise ValueError(f"Preregistration.margin must be a number > 0 (or None), got {self.margin!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"Preregistration.alpha must be between 0 and 1, got {self.alpha!r}")
        if _parsed_time(self.written) is None:
            raise ValueError(f"Preregistration.written must be an ISO 8601 time with a time zone (e.g. "
                             f"'2026-12-08T01:18:00+00:00'), got {self.written!r}")

    def save(self, path: str | Path) -> Path:
        """Write the registration as JSON at ``path``; never over an existing file (a registration
        changed after the fact is no registration: write a new one, whose time says when)."""
        from factlens.files import write_atomic

        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists: a pre-registration is never overwritten; save the new one under "
                                  "another name (its 'written' time then says when it was fixed)")
        text = json.dumps({"kind": "factlens.preregistration", "format": 1, **self.to_dict()}, indent=1) + "\n"
        write_atomic(path, lambda tmp: tmp.write_text(text))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Preregistration":
        """Read a registration that :meth:`save` wrote."""
        d = json.loads(Path(path).read_text())
        if not isinstance(d, Mapping) or d.get("kind") != "factlens.preregistration":
            raise ValueError(f"{path} is not a factlens pre-registration (Preregistration.save writes one)")
        return cls.from_dict({k: v for k, v in d.items() if k not in ("kind", "format")})


def _parsed_time(text: Any) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


#: Columns of :func:`confirm`'s table: the family, the predicted direction and the outcome, then the
#: verdict table's, and whether the registration predates every result.
CONFIRM_COLUMNS = ("family", "expected", "outcome", "localization", "metric", "suite", "test_unit", "value",
                   "reference_value", "diff", "ci_low", "ci_high", "p_holm", "significant", "mdd", "margin",
                   "p_holm_equivalence", "equivalent", "bound", "verdict", "n_units", "n_seeds", "before_results")


def confirm(runs, preregistration: Preregistration | str | Path):
    """The registered tests on ``runs`` and their outcome against the registered direction.

    Args:
        runs: As for :func:`factlens.compare`: run directories (or :class:`~factlens.RunFolder`)
            or a mapping ``localization -> [EvalResult per seed]``.
        preregistration: A :class:`Preregistration` or the path of one that was saved.

    Returns:
        A pandas DataFrame with :data:`CONFIRM_COLUMNS`, the primary family's rows first: each
        row's :func:`factlens.verdicts` evidence, its ``outcome`` (:data:`OUTCOMES` where a
        direction was registered) and ``before_results``: whether the registration's time is
        before every unit of the folders finished (``None`` for results given in memory, which
        carry no time).

    Raises:
        ValueError: A registered localization or the reference is not in ``runs``, and whatever
            :func:`factlens.verdicts` refuses (an unknown metric...).
    """
    import pandas as pd

    from factlens.comparison import compare, load_evaluations
    from factlens.verdict import combined
    from factlens.tost import equivalence

    p = preregistration if isinstance(preregistration, Preregistration) else Preregistration.load(preregistration)
    evals = load_evaluations(runs)
    if missing := [u for u in (p.reference, *p.localizations) if u not in evals]:
        raise ValueError(f"the registered unit(s) {missing} are not in the runs, which hold {sorted(evals)}")
    evals = {u: evals[u] for u in (p.reference, *p.localizations)}  # only the registered comparisons
    before = _before_results(runs, p.written)
    if before is False:
        warnings.warn(f"the pre-registration ({p.written}) was written after some of these results had finished: "
                      "its tests are not confirmatory", UserWarning, stacklevel=2)
    rows = []
    for family, metrics in (("primary", p.primary), ("secondary", p.secondary)):
        if not metrics:
            continue
        kw = dict(reference=p.reference, metrics=list(metrics), unit=p.unit, alpha=p.alpha)
        eq = (equivalence(evals, margin=p.margin, **kw) if p.margin is not None
              else pd.DataFrame(columns=["localization", "suite", "metric"]))
        for r in combined(compare(evals, **kw), eq).to_dict("records"):
            expected = p.expected if family == "primary" else None  # the claim's direction is the primary's
            rows.append({**r, "family": family, "expected": expected, "outcome": _outcome(r["verdict"], expected),
                         "before_results": before})
    return pd.DataFrame(rows, columns=list(CONFIRM_COLUMNS))


def _outcome(verdict: str, expected: str | None) -> str:
    if expected is None:
        return verdict
    if verdict in (expected, f"{expected}, negligible"):
        return "supported" + (", negligible" if verdict.endswith("negligible") else "")
    if verdict.startswith(("lower", "higher")):
        return "contradicted"
    return "not supported (equivalent)" if verdict == "equivalent" else verdict


def _before_results(runs, written: str) -> bool | None:
    """Whether ``written`` is before every unit's ``finished_at`` in the run folders of ``runs``
    (``None`` for a mapping of results, or folders whose units carry no time)."""
    from factlens.compare_inputs import RunFolder
    from factlens.runner.report import load_run_dir

    if isinstance(runs, (str, Path, RunFolder)):
        runs = [runs]
    if not isinstance(runs, (list, tuple)) or not all(isinstance(x, (str, Path, RunFolder)) for x in runs):
        return None
    times = [_parsed_time(r.get("finished_at")) for x in runs
             for r in load_run_dir(x.path if isinstance(x, RunFolder) else x)["runs"]]
    times = [t for t in times if t is not None]
    return (_parsed_time(written) < min(times)) if times else None


def confirm_text(table, preregistration: Preregistration) -> str:
    """The :func:`confirm` table as markdown: the registration, then one table per family."""
    from factlens.runner.report_comparisons import md_escape, number_cell as num, p_cell

    p = preregistration
    before = table["before_results"].iloc[0] if len(table) else None
    when = {True: "before every result", False: "**after some results had finished: not confirmatory**",
            None: "(results without times)"}[None if before is None or (isinstance(before, float) and math.isnan(before))
                                             else bool(before)]
    out = [f"Pre-registered {p.written} {when}: {md_escape(p.claim)}",
           f"({', '.join(p.localizations)} − {p.reference}; predicted: {p.expected or 'no direction'}; unit: {p.unit}; "
           f"margin: {'none' if p.margin is None else format(p.margin, 'g')}; Holm at {p.alpha:g} per family)", ""]
    head = ["family", "localization", "metric", "diff [95% CI]", "p (Holm)", "MDD", "rules out beyond", "verdict",
            "outcome"]
    out += ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * 4 + "---|---|"]
    for r in table.to_dict("records"):
        diff = num(r["diff"], "+.3f")
        if math.isfinite(float(r["ci_low"])) and math.isfinite(float(r["ci_high"])):
            diff += f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        cells = [r["family"], r["localization"], r["metric"], diff, p_cell(r["p_holm"]), num(r["mdd"], ".2f"),
                 num(r["bound"], ".3f"), r["verdict"], f"**{r['outcome']}**" if r["family"] == "primary" else r["outcome"]]
        out.append("| " + " | ".join(md_escape(str(c)) for c in cells) + " |")
    out += ["", "The primary family decides the claim; the secondary family is reported with its own Holm "
            "correction and cannot rescue a primary that fails. Verdicts as factlens verdict gives them "
            "(docs/statistics.md, Pre-registered comparisons)."]
    return "\n".join(out) + "\n"
