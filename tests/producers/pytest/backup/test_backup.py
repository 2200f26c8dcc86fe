import os

import pytest


def failing(tier):
    return tier in os.environ.get("FAIL", "").split(",")


def test_archive_is_written():
    assert True


def test_restore_keeps_posts():
    assert not failing("backup"), "posts lost after restore"


@pytest.mark.skip(reason="offsite copies are not set up here")
def test_offsite():
    assert False
