"""The verbs (``factlens.localize``, ``.edit``, ``.evaluate``, ``.compare``) and the subpackages
never share a name: importing any submodule keeps the verbs callable, and every submodule can
be imported with ``import factlens.x.y as m`` (issue 11, item 8: ``import factlens.edit.result
as m`` used to fail because ``factlens.edit`` was the function)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import factlens

VERBS = ("localize", "localization_mask", "edit", "evaluate", "compare", "equivalence", "sweep", "load_model")


def _all_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(factlens.__path__, "factlens.")]


def test_import_as_works_for_the_renamed_subpackages():
    # ``import a.b.c as m`` resolves through attributes: it failed while ``factlens.edit``
    # (the function) shadowed the subpackage of the same name
    code = ("import factlens.localization.activation as a\n"
            "import factlens.editing.editor as e\n"
            "import factlens.editing.result as r\n"
            "import factlens.evaluation.standard as v\n"
            "import factlens.comparison as c\n"
            "import factlens\n"
            "assert all(callable(getattr(factlens, n)) and not hasattr(getattr(factlens, n), '__path__')\n"
            "           for n in ('localize', 'edit', 'evaluate', 'compare'))\n"
            "print(a.__name__, e.__name__, r.__name__, v.__name__, c.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["factlens.localization.activation", "factlens.editing.editor",
                                  "factlens.editing.result", "factlens.evaluation.standard", "factlens.comparison"]


def test_no_subpackage_or_module_is_named_like_a_verb():
    top = {name.split(".")[1] for name in _all_modules()}
    assert not top & set(VERBS), f"modules named like a verb: {sorted(top & set(VERBS))}"


def test_importing_every_module_keeps_the_verbs_functions():
    skipped = []
    for name in _all_modules():
        try:
            importlib.import_module(name)
        except ImportError as e:  # optional extras (ray, bitsandbytes...) may be absent
            skipped.append((name, str(e)))
    for verb in VERBS:
        obj = getattr(factlens, verb)
        assert callable(obj) and not hasattr(obj, "__path__"), f"factlens.{verb} is {obj!r}"
    assert len(skipped) < 5, skipped


def test_a_module_doctested_alone_is_the_package_module():
    """``pytest factlens/evaluation/relearning.py`` alone: with ``--import-mode=importlib`` pytest
    used to execute the file as a second copy of the module (its ``RelearningConfig`` was not the
    one ``EvalConfig`` checks against), so its doctests failed; the root conftest imports the
    package first."""
    from pathlib import Path

    root = Path(factlens.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--doctest-modules",
                          "factlens/evaluation/relearning.py"], capture_output=True, text=True, timeout=600, cwd=root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout
