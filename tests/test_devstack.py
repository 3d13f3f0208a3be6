import contextlib

import psutil
import psycopg
import pytest
import redis

from project import devstack


@pytest.mark.slow
def test_embedded_postgres_and_redis_start_serve_and_stop(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    env, servers = devstack.start_missing_servers(tmp_path, probe_local=False)
    try:
        assert env["DATABASE_URL"].endswith("/gatehouse")
        socket_dir = servers._postgres.get_postmaster_info().socket_dir
        with psycopg.connect(host=str(socket_dir), user="postgres", dbname="gatehouse") as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("gatehouse",)
        client = redis.Redis.from_url(env["REDIS_URL"])
        assert client.ping() is True
        client.set("k", "v")
        assert client.get("k") == b"v"
        postgres_pid = servers._postgres.get_pid()
        redis_pid = servers._redis.pid
        assert psutil.pid_exists(postgres_pid)
        assert psutil.pid_exists(redis_pid)
    finally:
        servers.stop()
    for pid in (postgres_pid, redis_pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_set_urls_are_used_and_nothing_is_started(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://somewhere/db")
    monkeypatch.setenv("REDIS_URL", "redis://somewhere:6379/0")
    env, servers = devstack.start_missing_servers(tmp_path, probe_local=False)
    assert env == {}
    assert servers._postgres is None
    assert servers._redis is None
    assert list(tmp_path.iterdir()) == []


def test_make_run_links_in_emails_follow_the_port_it_serves_on():
    # PORT=8100 make run: invitations, role changes and dunning emails are built from SITE_URL (by the web process
    # and the Celery worker alike), so SITE_URL must follow the port unless it is set.
    env = devstack.run_environment({"PORT": "8100"})
    assert (env["SITE_URL"], env["DEBUG"]) == ("http://127.0.0.1:8100", "1")
    assert devstack.run_environment({})["SITE_URL"] == "http://127.0.0.1:8000"
    assert (
        devstack.run_environment({"PORT": "8100", "SITE_URL": "https://gh.example"})["SITE_URL"] == "https://gh.example"
    )
