"""`make run`'s supervisor end to end: embedded stack, migrate, seed, web + worker + beat, the reference relay in front
of Anvil and the demo LLM upstream with the simulator's live traffic going through it, Ctrl-C."""

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


def _post_json(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(  # noqa: S310 - the local relay under test
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status, json.loads(response.read())


def _manage(env: dict[str, str], code: str) -> str:
    """manage.py shell -c code through `make manage`'s path, against the running stack; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "project.devstack", "exec", "--", sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sign_in(base: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_page = opener.open(f"{base}/accounts/login/", timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "login": DEMO_EMAIL, "password": DEMO_PASSWORD})
    return opener.open(f"{base}/accounts/login/", data=form.encode(), timeout=30).read().decode()


def _command_line(process: psutil.Process) -> str:
    """A child's command line; empty for one that exited since it was listed (a short-lived helper, a zombie)."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


@pytest.mark.slow
def test_make_run_serves_the_demo_and_ctrl_c_leaves_no_process(tmp_path):
    port, relay_port = free_port(), free_port()
    # The simulator runs too, live only (a week of backfill would make this test minutes long).
    env = subprocess_env(
        GATEHOUSE_DATA_DIR=str(tmp_path / "data"),
        PORT=str(port),
        SIMULATE_BACKFILL_DAYS="0",
        SIMULATE_LIVE_RATE="50",
        METRICS_TOKEN="make-run-test-metrics-token",
        RELAY_PORT=str(relay_port),
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
        names = " ".join(_command_line(p) for p in started)
        assert "gunicorn" in names
        assert "worker" in names
        assert "beat" in names
        assert "project.webhook_sink" in names  # the demo's webhook receiver
        home = _sign_in(base)
        assert "Acme Web3" in home
        # `make manage` reaches the same (embedded) database while `make run` is up.
        users = _manage(
            env, "from accounts.models import User; print(list(User.objects.values_list('email', flat=True)))"
        )
        assert DEMO_EMAIL in users
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
        # The relay serves a demo key (Staging's, no secret required) from Anvil, as the printed curl does ...
        secrets = json.loads((tmp_path / "data" / "demo-key-secrets.json").read_text())
        ci_key = next(key_id for key_id, value in secrets.items() if value["name"] == "ci")
        relay = f"http://127.0.0.1:{relay_port}"
        wait_for_http(f"{relay}/healthz", timeout=60, process=supervisor)
        names = " ".join(" ".join(p.cmdline()) for p in psutil.Process(supervisor.pid).children(recursive=True))
        assert "anvil" in names
        assert "relay.demo_llm" in names
        assert "-m relay" in names
        call = {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []}
        assert _post_json(f"{relay}/sepolia/v1/{ci_key}", call) == (
            200,
            {"jsonrpc": "2.0", "id": 7, "result": "0x7a69"},
        )
        # ... and the simulator's live traffic goes through it: the relay's own usage (its region) reaches the ledger.
        count_relayed = "from analytics.models import Relay; print(Relay.objects.filter(region='local').count())"
        deadline = time.monotonic() + 60
        while int(_manage(env, count_relayed).split()[-1]) < 20:
            assert time.monotonic() < deadline, "the relay's usage did not arrive"
            time.sleep(2)
        started = psutil.Process(supervisor.pid).children(recursive=True)
        assert "simulate_relays" in " ".join(" ".join(p.cmdline()) for p in started)
        assert psutil.pid_exists(pg_pid)
    finally:
        supervisor.send_signal(signal.SIGINT)
        output = supervisor.communicate(timeout=90)[0].decode()
    assert "Gatehouse is up" in output
    assert f"Relay:            {relay}" in output
    assert f"curl -s {relay}/sepolia/v1/{ci_key} -d" in output
    assert "through the relay" in output  # the simulator's live phase says how much goes through it
    assert "stopped." in output
    leftovers = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == []
    assert not psutil.pid_exists(pg_pid) or psutil.Process(pg_pid).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "data" / "stack.env").exists()
