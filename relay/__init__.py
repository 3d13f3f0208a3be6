"""The reference relay: a small gateway built only on Gatehouse's gateway contract (config feed + usage push).

It imports nothing from the Django apps (import-linter forbids it): that it runs at all is the proof that the
contract is enough to run a gateway. `python -m relay`; settings in relay/config.py, the README has the rest.
"""
