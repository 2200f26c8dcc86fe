import os


def test_upgrade():
    assert os.environ.get("FAIL_TIER") != "upgrade", "upgrade broke on purpose (FAIL_TIER)"
