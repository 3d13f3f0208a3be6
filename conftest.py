# The shared fixtures (three tenants, browser, subprocess helpers) live in tests/fixtures.py rather than
# tests/conftest.py: every app's tests/ folder needs them too, and pytest cannot load one conftest as both.
pytest_plugins = ["tests.fixtures"]
