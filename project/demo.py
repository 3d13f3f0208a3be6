"""The demo data `make run` seeds: who to log in as. The seeding itself is `manage.py seed_demo`."""

DEMO_EMAIL = "demo@gatehouse.dev"
DEMO_PASSWORD = "demo-password-2026"  # noqa: S105 - a public demo login, printed by make run
DEMO_NAME = "Dana Demo"
DEMO_TEAM_NAME = "Acme Web3"
# Teammates share the demo password, one per role, so each role's view can be tried.
DEMO_TEAMMATES = [
    ("admin@gatehouse.dev", "Avery Admin", "admin"),
    ("dev@gatehouse.dev", "Devon Developer", "developer"),
    ("finance@gatehouse.dev", "Fran Finance", "finance"),
    ("viewer@gatehouse.dev", "Vic Viewer", "viewer"),
]
