import os


def test_install():
    assert os.environ.get("FAIL_TIER") != "install", "install broke on purpose (FAIL_TIER)"
