import os


def failing(tier):
    return tier in os.environ.get("FAIL", "").split(",")


def test_login_works():
    assert not failing("functional")
