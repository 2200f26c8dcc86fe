import os

import pytest


def failing(tier):
    return tier in os.environ.get("FAIL", "").split(",")


@pytest.fixture
def last_release():
    # Set-up that fails: pytest reports an error, not a failure, for the test that needed it.
    if failing("upgrade"):
        raise RuntimeError("the last release would not deploy")
    return "1.0.0+1.0"


def test_upgrade_keeps_data(last_release):
    assert last_release
