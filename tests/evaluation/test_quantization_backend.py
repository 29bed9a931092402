"""``QuantizationConfig(backend="bitsandbytes")`` without bitsandbytes: a clear error when the
suite starts, naming the fix (it failed after scoring the model, with a bare ModuleNotFoundError)."""

from __future__ import annotations

import builtins
import importlib.util

import pytest

from factlens.evaluation import quantization as quant
from factlens.evaluation.quantization import QuantizationConfig, quantized_copy, run_quantization
from factlens.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_bitsandbytes(monkeypatch):
    """bitsandbytes cannot be imported (as in this venv; hidden when it is installed)."""
    if importlib.util.find_spec("bitsandbytes") is not None:
        real = builtins.__import__

        def refuse(name, *args, **kwargs):
            if name == "bitsandbytes" or name.startswith("bitsandbytes."):
                raise ModuleNotFoundError("No module named 'bitsandbytes'")
            return real(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", refuse)


def test_the_suite_refuses_a_missing_bitsandbytes_before_scoring(planted, no_bitsandbytes, monkeypatch):
    scored = []
    real = quant.score_task
    monkeypatch.setattr(quant, "score_task", lambda *a, **k: scored.append(1) or real(*a, **k))
    qc = QuantizationConfig(backend="bitsandbytes", schemes=("nf4",))
    with pytest.raises(ImportError, match=r"needs bitsandbytes.*pip install bitsandbytes.*backend='torch'"):
        run_quantization(planted.model, planted.task, original=planted.model, quantization_config=qc)
    assert scored == []  # nothing was scored before the error


def test_quantized_copy_names_the_fix_too(no_bitsandbytes):
    with pytest.raises(ImportError, match=r"pip install bitsandbytes, or use backend='torch'"):
        quantized_copy(tiny_model(), "int8", backend="bitsandbytes")


def test_the_torch_backend_does_not_need_bitsandbytes(planted, no_bitsandbytes):
    r = run_quantization(planted.model, planted.task, quantization_config=QuantizationConfig(schemes=("nf4",)))
    assert r["quant_nf4_forget_accuracy"].n == len(planted.task.forget)
