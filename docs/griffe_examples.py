"""Griffe extension for the docs build: read ``Example:`` docstring sections as examples.

factlens docstrings use Google style with ``Example:`` (singular) headings; griffe only
recognizes ``Examples:``, and would render the doctest lines as Markdown. This extension
renames the heading before the docstring is parsed, so doctests render as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` headings to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None and "Example:" in obj.docstring.value:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
