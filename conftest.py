"""Root conftest: import factlens before pytest collects any of its modules.

``--import-mode=importlib`` (pyproject.toml) executes a collected file under its module name
when that module is not imported yet. For a module the package's ``__init__`` imports in turn
(``factlens.evaluation.relearning``, through ``factlens.evaluation.config``) that made two
copies of it, and its doctests failed when the file was the only one collected
(``pytest factlens/evaluation/relearning.py``: "EvalConfig.relearning must be a
RelearningConfig ... got RelearningConfig"). With the package imported first, pytest reuses
the module that is already there.
"""

import factlens  # noqa: F401
import factlens.evaluation  # noqa: F401
