import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_lacks_a_migration():
    # --check exits non-zero (SystemExit) when makemigrations would write anything.
    try:
        call_command("makemigrations", "--check", "--dry-run", verbosity=0)
    except SystemExit as exc:
        pytest.fail(f"a migration is missing (makemigrations --check exited {exc.code}); run makemigrations")


def test_custom_user_model_is_in_the_first_accounts_migration():
    from pathlib import Path

    from accounts.migrations import __path__ as migrations_path

    first = sorted(Path(migrations_path[0]).glob("0001_*.py"))[0].read_text()
    assert "name='User'" in first or 'name="User"' in first
