"""gunicorn reads this file from the working directory: its own log lines use the app's format.

With LOG_FORMAT=json (the default when DEBUG is off) gunicorn's lines are JSON too, so a
log pipeline sees one format. Request lines come from project.middleware, with the request id.
"""

import os

_debug = os.environ.get("DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
_format = os.environ.get("LOG_FORMAT", "").strip() or ("text" if _debug else "json")

accesslog = None  # one request line per request already comes from the app, with its id
# gunicorn 27's control socket defaults to one path per user; several servers on one host would collide.
control_socket_disable = True
if _format == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "project.logging.RequestIdFilter"},
            "redact_secrets": {"()": "project.logging.RedactSecretsFilter"},
        },
        "formatters": {"json": {"()": "project.logging.JsonFormatter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request_id", "redact_secrets"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False}},
    }
