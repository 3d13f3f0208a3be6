"""The demo data `make run` seeds: who to log in as. The seeding itself is `manage.py seed_demo`."""

DEMO_EMAIL = "demo@gatehouse.dev"
DEMO_PASSWORD = "demo-password-2026"  # noqa: S105 - a public demo login, printed by make run
DEMO_NAME = "Dana Demo"
