"""`python -m relay`: the reference relay, configured from the environment (relay/config.py, README)."""

from __future__ import annotations

import os
import sys

from aiohttp import web

from relay.app import create_app
from relay.config import ConfigError, settings_from_env
from relay.observability import configure_logging


def main() -> int:
    try:
        settings = settings_from_env(os.environ)
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    configure_logging(settings.log_level)
    # run_app turns SIGTERM and SIGINT into a graceful exit: stop accepting, answer what is in flight (up to
    # shutdown_timeout), then the cleanup that flushes the usage buffer (relay.app.Relay.lifetime).
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        shutdown_timeout=10.0,
        handle_signals=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
