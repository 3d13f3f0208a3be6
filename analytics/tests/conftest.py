"""The usage fixture (team A endpoint, keys and a gateway client) lives in tests/fixtures.py, shared with billing."""
