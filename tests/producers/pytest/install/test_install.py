"""A recipe's suite in pytest, one directory per tier (docs/sweep.md, "Greenness"), run by
agent/tests/suite/producers.rs through the real sweep. FAIL names the tiers that fail."""
import os


def failing(tier):
    return tier in os.environ.get("FAIL", "").split(",")


def test_app_answers():
    assert not failing("install")
