"""The demo's webhook receiver: what a customer would write to take Gatehouse's events, and nothing more.

    python -m project.webhook_sink --port 8001 --secret-file .data/webhook-sink-secret

`make run` starts it and points the demo team's webhook endpoint at it. Every POST, whatever its path, is checked
with the recipe the webhooks page gives receivers (HMAC-SHA256 over `<t>.<raw body>` with the endpoint's secret,
compared in constant time, five minutes of tolerance), then answered 204 with one line on stdout per event, or 400
with the reason. It imports nothing of Gatehouse's (standard library only), so it runs as a file on its own too.
The secret is read from the file, again whenever the file changes (the seed writes it after this starts, and
writes a new one when it rotates the secret).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SIGNATURE_HEADER = "Gatehouse-Signature"
TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 1024 * 1024
PREFIX = "[webhook-sink]"

_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(f"{PREFIX} {line}\n")
        sys.stdout.flush()


class SecretFile:
    """The signing secret in a file, re-read when the file changes (its inode, size or modification time)."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._secret: str | None = None
        self._lock = threading.Lock()

    def read(self) -> str | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if stamp != self._stamp:
                self._secret = self.path.read_text().strip() or None
                self._stamp = stamp
            return self._secret


def check_signature(secret: str, header: str, body: bytes, now: float | None = None) -> str | None:
    """None if `header` signs `body` with `secret` within the tolerance; else why not. The documented recipe, with
    each way of failing told apart so the demo can say which."""
    pairs = [item.split("=", 1) for item in header.split(",") if "=" in item]
    timestamps = [int(value) for key, value in pairs if key.strip() == "t" and value.isdigit()]
    signatures = [value for key, value in pairs if key.strip() == "v1"]
    if not timestamps or not signatures:
        return f"malformed {SIGNATURE_HEADER} header (no t= or no v1=)"
    age = (time.time() if now is None else now) - timestamps[0]
    if abs(age) > TOLERANCE_SECONDS:
        return f"stale timestamp ({age:+.0f} s, tolerance {TOLERANCE_SECONDS} s)"
    signed = f"{timestamps[0]}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, signature) for signature in signatures):
        return "invalid signature (not signed with this secret, or the body was changed)"
    return None


class Sink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, secret: SecretFile, host: str = "127.0.0.1"):
        self.secret = secret
        super().__init__((host, port), Handler)


class Handler(BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:
        declared = self.headers.get("Content-Length", "0").strip()
        if not declared.isdigit():
            self._answer(400, "no valid Content-Length")
            return
        length = int(declared)
        if length > MAX_BODY_BYTES:
            self._answer(413, f"body of {length} bytes is too large")
            return
        body = self.rfile.read(length)
        secret = self.server.secret.read()
        if secret is None:  # the seed has not written it yet: Gatehouse retries later
            self._answer(503, f"no signing secret yet ({self.server.secret.path} is missing or empty)")
            return
        header = self.headers.get(SIGNATURE_HEADER)
        if not header:
            self._answer(400, f"no {SIGNATURE_HEADER} header")
            return
        problem = check_signature(secret, header, body)
        if problem:
            self._answer(400, problem)
            return
        try:
            event = json.loads(body)
        except ValueError:
            self._answer(400, "bad JSON (signed, but not a JSON document)")
            return
        if not isinstance(event, dict):
            self._answer(400, "bad JSON (not an object)")
            return
        self._answer(204)
        data = event.get("data")
        summary = (data.get("summary") if isinstance(data, dict) else None) or event.get("text")  # Slack: {"text": …}
        described = " ".join(str(part) for part in (event.get("id"), event.get("type")) if part) or "event"
        say(f"verified {described}" + (f" — {summary}" if summary else ""))

    def _answer(self, status: int, problem: str = "") -> None:
        if problem:
            say(f"rejected POST {self.path} ({status}): {problem}")
            payload = json.dumps({"error": problem}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass  # one line per event (above) says all there is to say


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m project.webhook_sink", description="The demo's webhook receiver.")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--secret-file", type=Path, required=True, help="file holding the endpoint's signing secret")
    args = parser.parse_args(argv)
    try:
        server = Sink(args.port, SecretFile(args.secret_file))
    except OSError as error:
        say(f"cannot listen on 127.0.0.1:{args.port}: {error.strerror or error}")
        return 1
    say(f"listening on http://127.0.0.1:{args.port}/ (secret from {args.secret_file})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
