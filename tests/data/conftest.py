from __future__ import annotations

import pytest

from tests.data.fixtures import make_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(autouse=True)
def fresh_plans():
    """Each test lists its files anew, as a new process would (make_plan caches per process)."""
    from tinytitan.data.planner import forget_plans

    forget_plans()
