"""Tests of ``factlens.strict_json``: result files that strict JSON parsers read."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from factlens.strict_json import strict_dumps, strict_loads


def test_non_finite_numbers_anywhere_are_written_as_null():
    obj = {"a": float("nan"), "b": [1.5, float("inf"), -math.inf], "c": np.array([[np.nan, 2.0]]),
           "d": np.float32("nan"), "e": (np.int64(3), np.bool_(True)), "f": torch.tensor([float("nan"), 1.0]),
           "g": {"h": [{"i": np.float64("-inf")}]}, 7: "int key", "s": "NaN"}
    back = strict_loads(strict_dumps(obj))
    assert back == {"a": None, "b": [1.5, None, None], "c": [[None, 2.0]], "d": None, "e": [3, True],
                    "f": [None, 1.0], "g": {"h": [{"i": None}]}, "7": "int key", "s": "NaN"}


def test_finite_values_are_written_as_json_dumps_writes_them():
    obj = {"x": [0.1, 1e-300, -2.5e10, 3], "y": None, "z": "text", "t": True}
    for indent in (None, 1):
        assert strict_dumps(obj, indent=indent) == json.dumps(obj, indent=indent)


def test_strict_loads_rejects_what_strict_parsers_reject():
    for token in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match=f"{token} is not JSON"):
            strict_loads(f'{{"a": [1, {token}]}}')


def test_an_object_json_cannot_write_still_raises_typeerror():
    class Opaque:
        pass

    with pytest.raises(TypeError):
        strict_dumps({"a": Opaque()}, default=lambda x: x)
