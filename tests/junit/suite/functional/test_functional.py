import os


def test_functional():
    assert os.environ.get("FAIL_TIER") != "functional", "functional broke on purpose (FAIL_TIER)"
