import os


def test_backup():
    assert os.environ.get("FAIL_TIER") != "backup", "backup broke on purpose (FAIL_TIER)"
