import re
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from project import env as envmod
from tests.fixtures import BASE_DIR, subprocess_env

# Variables tests/settings.py sets for the test run; a "production" subprocess must not inherit them.
TEST_ONLY = ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "EMAIL_URL", "SECURE_SSL_REDIRECT", "SECURE_COOKIES", "SITE_URL")

PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "prod-" + "Zq8#vR2!mL5@xT9$" * 4,
    "ALLOWED_HOSTS": "gatehouse.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://gatehouse.example.com",
    "SITE_URL": "https://gatehouse.example.com",
    "EMAIL_URL": "smtp://mailer:secret@smtp.example.com:587",
}


@pytest.mark.parametrize(
    ("reader", "value", "message"),
    [
        (lambda: envmod.env_bool("X_TEST_VALUE"), "maybe", "is not a boolean"),
        (lambda: envmod.env_int("X_TEST_VALUE", 1), "ten", "is not an integer"),
        (lambda: envmod.env_int("X_TEST_VALUE", 1, minimum=5), "3", "below the minimum 5"),
        (lambda: envmod.env_url("X_TEST_VALUE", schemes=("postgres",)), "mysql://x/y", "schemes postgres"),
        (lambda: envmod.env_str("X_TEST_VALUE", required=True), "", "must be set"),
    ],
)
def test_env_readers_fail_loudly_on_malformed_values(monkeypatch, reader, value, message):
    monkeypatch.setenv("X_TEST_VALUE", value)
    with pytest.raises(ImproperlyConfigured, match=message):
        reader()


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("off", False), ("0", False)])
def test_env_bool_reads_the_usual_spellings(monkeypatch, value, expected):
    monkeypatch.setenv("X_TEST_VALUE", value)
    assert envmod.env_bool("X_TEST_VALUE") is expected


def clean_env(**env: str) -> dict[str, str]:
    base = subprocess_env()
    for name in TEST_ONLY:
        base.pop(name, None)
    base.update(env)
    return base


def _import_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import project.settings"],
        cwd=BASE_DIR,
        env=clean_env(**env),
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "short"}, "at least 50 characters"),
        ({"SECRET_KEY": "s" * 60}, "ALLOWED_HOSTS must be set"),
        ({"DEBUG": "perhaps"}, "is not a boolean"),
        ({"DEBUG": "1", "DATABASE_URL": "mysql://db/x"}, "DATABASE_URL must be a URL"),
    ],
)
def test_settings_refuse_to_start_with_missing_or_malformed_values(env, complaint):
    result = _import_settings(env)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_debug_is_off_unless_set():
    result = _import_settings({"SECRET_KEY": "s" * 60, "ALLOWED_HOSTS": "x.example", "EMAIL_URL": "console://"})
    assert result.returncode == 0, result.stderr
    check = subprocess.run(
        [sys.executable, "-c", "import project.settings as s; print(s.DEBUG, s.PASSWORD_HASHERS[0])"],
        cwd=BASE_DIR,
        env=clean_env(SECRET_KEY="s" * 60, ALLOWED_HOSTS="x.example", EMAIL_URL="console://"),
        capture_output=True,
        text=True,
    )
    assert check.stdout.split() == ["False", "django.contrib.auth.hashers.Argon2PasswordHasher"]


def test_check_deploy_is_clean_with_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=clean_env(**PRODUCTION_ENV),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_env_example_lists_every_variable_the_settings_read():
    read = set()
    for path in [BASE_DIR / "project" / "settings.py"]:
        read |= set(re.findall(r'env_(?:str|bool|int|list|url)\(\s*"([A-Z0-9_]+)"', path.read_text()))
    listed = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.MULTILINE))
    assert read, "no env readers found: the pattern is out of date"
    assert read - listed == set()


def test_production_settings_keep_argon2_and_json_logs():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import project.settings as s; print(s.LOG_FORMAT, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE)",
        ],
        cwd=BASE_DIR,
        env=clean_env(**PRODUCTION_ENV),
        capture_output=True,
        text=True,
    )
    assert result.stdout.split() == ["json", "True", "True"], result.stderr
