# The shared fixtures (three tenants, browser, subprocess helpers) live in tests/fixtures.py rather than
# tests/conftest.py: every app's tests/ folder needs them too, and pytest cannot load one conftest as both.
# billing/tests/fixtures.py adds Stripe faked at the HTTP boundary (the browser journeys use it too).
pytest_plugins = ["tests.fixtures", "billing.tests.fixtures"]
