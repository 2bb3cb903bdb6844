import copy

import pytest

from tests.factories import SIMPLE_GRAPH


@pytest.fixture
def graph() -> dict:
    """A valid DSL graph the test may change freely."""
    return copy.deepcopy(SIMPLE_GRAPH)
