"""With BROKEN_IMPORT set, this module cannot be imported: pytest reports a collection error in
the backup tier, whose other module passes."""
import os

if os.environ.get("BROKEN_IMPORT"):
    import recipe_helpers_that_do_not_exist  # noqa: F401


def test_restore_from_yesterday():
    assert True
