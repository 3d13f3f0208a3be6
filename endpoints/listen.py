"""Waking the config feed's long-polls: PostgreSQL LISTEN/NOTIFY on one channel.

The writer side is one call in `services.config_change_record()`: a NOTIFY in the transaction that records the
change. PostgreSQL queues it and delivers it only when that transaction commits (never on rollback), and a
listener receives it only once the committed rows are visible to a new snapshot, so a woken request always finds
the change in the log.

The reader side listens on a connection of its own (autocommit, outside Django's connection handling), so a
request that waits holds no Django connection and no transaction. It LISTENs first and only then looks at the log
again: a change that committed before the LISTEN is in the log, and one that commits after it notifies us, so none
falls between the two. Each waiter holds a web thread for up to its wait, so a process admits at most
settings.CONFIG_FEED_MAX_WAITERS of them at a time; the rest are answered at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dj_database_url
import psycopg
from django.conf import settings
from django.db import connection
from psycopg import sql

from endpoints.models import ConfigChange

logger = logging.getLogger(__name__)

CHANNEL = "gatehouse_config"
# How a waiting request's connection shows in pg_stat_activity.
APPLICATION_NAME = "gatehouse config feed waiter"

_slots_lock = threading.Lock()
_waiting = 0


def config_change_notify(*, cursor: int) -> None:
    """Tell the feed's waiting requests, once the caller's transaction commits, that the log now reaches `cursor`."""
    with connection.cursor() as db:
        db.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(cursor)])


@contextmanager
def waiter_slot() -> Iterator[bool]:
    """One of this process's waiter slots (True), or False when all of them are taken."""
    global _waiting  # a per-process count, shared by the threads that serve requests
    with _slots_lock:
        granted = _waiting < settings.CONFIG_FEED_MAX_WAITERS
        if granted:
            _waiting += 1
    try:
        yield granted
    finally:
        if granted:
            with _slots_lock:
                _waiting -= 1


def _connection_params() -> dict[str, Any]:
    # Django's own parameters (test database name, timeouts, server options), for a connection it does not manage;
    # straight to PostgreSQL when Django's go through a transaction pooler (LISTEN needs a session of its own).
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    if settings.DATABASE_DIRECT_URL != settings.DATABASE_URL:
        direct: dict[str, Any] = dict(dj_database_url.parse(settings.DATABASE_DIRECT_URL))
        params.update({key: direct[name] for key, name in (("host", "HOST"), ("port", "PORT"), ("user", "USER"),
                       ("password", "PASSWORD")) if direct.get(name)})  # fmt: skip
    params["application_name"] = APPLICATION_NAME
    return params


def _notified_cursor(payload: str) -> int | None:
    return int(payload) if payload.isascii() and payload.isdigit() else None


def wait_for_change(*, since: int, timeout: float) -> bool:
    """Block until a change after `since` commits (True) or `timeout` seconds pass (False).

    Raises psycopg.Error when PostgreSQL cannot be reached for the dedicated connection.
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(**_connection_params(), autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        exists = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE id > %s)").format(
            sql.Identifier(ConfigChange._meta.db_table)
        )
        row = listener.execute(exists, [since]).fetchone()
        if row and row[0]:
            return True
        while (left := deadline - time.monotonic()) > 0:
            for notify in listener.notifies(timeout=left, stop_after=1):
                cursor = _notified_cursor(notify.payload)
                # A payload we cannot read still means "something committed": answer and let the log tell.
                if cursor is None or cursor > since:
                    return True
    return False
