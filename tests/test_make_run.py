"""`make run`'s supervisor end to end: embedded stack, migrate, seed, web + worker + beat, Ctrl-C."""

import http.cookiejar
import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import psutil
import pytest

from project.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.fixtures import BASE_DIR, free_port, subprocess_env, wait_for_http


def _sign_in(base: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_page = opener.open(f"{base}/accounts/login/", timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "login": DEMO_EMAIL, "password": DEMO_PASSWORD})
    return opener.open(f"{base}/accounts/login/", data=form.encode(), timeout=30).read().decode()


@pytest.mark.slow
def test_make_run_serves_the_demo_and_ctrl_c_leaves_no_process(tmp_path):
    port = free_port()
    # The simulator runs too, live only (a week of backfill would make this test minutes long).
    env = subprocess_env(
        GATEHOUSE_DATA_DIR=str(tmp_path / "data"),
        PORT=str(port),
        SIMULATE_BACKFILL_DAYS="0",
        SIMULATE_LIVE_RATE="50",
        METRICS_TOKEN="make-run-test-metrics-token",
    )
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DEBUG", "SITE_URL", "EMAIL_URL", "ALLOWED_HOSTS"):
        env.pop(name, None)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "project.devstack", "run"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", timeout=180, process=supervisor)
        started = psutil.Process(supervisor.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "gunicorn" in names
        assert "worker" in names
        assert "beat" in names
        assert "project.webhook_sink" in names  # the demo's webhook receiver
        home = _sign_in(base)
        assert "Acme Web3" in home
        # `make manage` reaches the same (embedded) database while `make run` is up.
        manage = subprocess.run(
            [sys.executable, "-m", "project.devstack", "exec", "--", sys.executable, "manage.py", "shell", "-c",
             "from accounts.models import User; print(list(User.objects.values_list('email', flat=True)))"],
            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert DEMO_EMAIL in manage.stdout, manage.stderr
        pg_pid = int((tmp_path / "data" / "postgres" / "postmaster.pid").read_text().split()[0])
        # The simulated gateway's relays arrive through the real API and get aggregated.
        deadline = time.monotonic() + 60
        while True:
            ready = urllib.request.Request(  # noqa: S310 - the local server under test
                f"{base}/readyz", headers={"Authorization": "Bearer make-run-test-metrics-token"}
            )
            ingestion = json.loads(urllib.request.urlopen(ready, timeout=10).read())["ingestion"]  # noqa: S310
            if ingestion["records_per_second_1m"] > 0 and ingestion["pending_batches"] == 0:
                break
            assert time.monotonic() < deadline, f"no simulated traffic arrived: {ingestion}"
            time.sleep(1)
        started = psutil.Process(supervisor.pid).children(recursive=True)
        assert "simulate_relays" in " ".join(" ".join(p.cmdline()) for p in started)
        assert psutil.pid_exists(pg_pid)
    finally:
        supervisor.send_signal(signal.SIGINT)
        output = supervisor.communicate(timeout=90)[0].decode()
    assert "Gatehouse is up" in output
    assert "stopped." in output
    leftovers = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == []
    assert not psutil.pid_exists(pg_pid) or psutil.Process(pg_pid).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "data" / "stack.env").exists()
