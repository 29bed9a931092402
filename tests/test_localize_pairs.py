import warnings

import pytest

from factlens.data import FactDataset, FactRecord
from factlens.localize.pairs import make_pairs
from factlens.testing import tiny_model


def _rec(subject, answer):
    return FactRecord(subject=subject, template="Fact: {} plays the sport of", answer=answer)


def test_unpaired_facts_dropped_with_warning_or_error():
    m = tiny_model()
    ds = FactDataset((_rec("LeBron James", "basketball"), _rec("Tom Brady", "football"), _rec("Jordan", "basketball")))
    with pytest.warns(UserWarning, match="Jordan"):
        p = make_pairs(m, ds)
    assert [r.subject for r in p.records] == ["LeBron James", "Tom Brady"]
    assert p.clean.tokens.shape[0] == 2 and p.corrupted.tokens.shape == p.clean.tokens.shape
    with pytest.raises(ValueError, match="same token length"):
        make_pairs(m, ds, drop_unpaired=False)
