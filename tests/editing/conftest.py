"""Fixtures shared by the editing tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Key covariances go to a temporary cache of the test module, never to ~/.cache."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("factlens_cache")
    mp.setenv("FACTLENS_CACHE", str(path))
    yield path
    mp.undo()
