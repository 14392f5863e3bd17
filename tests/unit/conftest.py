"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest
from coretools import CoreHarness


@pytest.fixture
def h(tmp_path):
    """The server core on a real SQLite store in a temp dir (coretools.CoreHarness)."""
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()
