"""webhooks.signing, and the verification snippets the Webhooks page shows (run as shown: Python here, Node in node)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time

import pytest

from webhooks.signing import signature_header, verify_signature

SECRET = "ghw_0123abcd_" + "s" * 43
BODY = b'{"id":"evt_1","type":"budget.exceeded","data":{"spent":"12.50"}}'


def test_a_signed_body_verifies():
    assert verify_signature(SECRET, signature_header([SECRET], BODY), BODY)


def test_the_header_is_stripe_style():
    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", signature_header([SECRET], BODY, timestamp=1700000000))


@pytest.mark.parametrize(
    ("secret", "body", "now_offset"),
    [
        ("ghw_0123abcd_" + "t" * 43, BODY, 0),  # another secret
        (SECRET, BODY.replace(b"12.50", b"1.25"), 0),  # a tampered body
        (SECRET, BODY + b" ", 0),  # one byte more
        (SECRET, BODY, 301),  # replayed after the tolerance
        (SECRET, BODY, -301),  # from the future
    ],
)
def test_anything_else_is_refused(secret, body, now_offset):
    header = signature_header([SECRET], BODY, timestamp=1_700_000_000)
    assert not verify_signature(secret, header, body, now=1_700_000_000 + now_offset)


@pytest.mark.parametrize("header", ["", "t=,v1=", "v1=abc", "t=1700000000", "t=abc,v1=00", "garbage"])
def test_malformed_headers_are_refused(header):
    assert not verify_signature(SECRET, header, BODY, now=1_700_000_000)


def test_during_a_rotation_either_secret_verifies():
    old = "ghw_00000000_" + "o" * 43
    header = signature_header([SECRET, old], BODY)
    assert verify_signature(SECRET, header, BODY)
    assert verify_signature(old, header, BODY)


# --- the snippets on the page ----------------------------------------------------------------------


@pytest.fixture
def snippets(client_for, owner_a, team_a) -> dict[str, str]:
    page = client_for(owner_a).get(f"/t/{team_a.slug}/webhooks/").content.decode()
    found = dict(re.findall(r'<pre class="code-block" id="verify-(\w+)"><code>(.*?)</code></pre>', page, re.DOTALL))
    return {language: html.unescape(code) for language, code in found.items()}


@pytest.mark.django_db
def test_the_python_snippet_verifies_and_refuses(snippets):
    namespace: dict[str, object] = {}
    exec(snippets["python"], namespace)  # noqa: S102 - our own documentation, run as a reader would
    verify = namespace["verify"]
    header = signature_header([SECRET], BODY)
    assert verify(SECRET, header, BODY)
    assert not verify(SECRET, header, BODY + b"x")
    assert not verify(SECRET, signature_header([SECRET], BODY, timestamp=int(time.time()) - 600), BODY)


@pytest.mark.django_db
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_node_snippet_verifies_and_refuses(snippets, tmp_path):
    cases = [
        (signature_header([SECRET], BODY), BODY, True),
        (signature_header([SECRET], BODY), BODY + b"x", False),
        (signature_header([SECRET], BODY, timestamp=int(time.time()) - 600), BODY, False),
    ]
    harness = "\n".join(
        [
            snippets["node"],
            f"const cases = {json.dumps([[h, b.decode(), ok] for h, b, ok in cases])};",
            f"console.log(JSON.stringify(cases.map(([h, b]) => verify({json.dumps(SECRET)}, h, Buffer.from(b)))));",
        ]
    )
    script = tmp_path / "verify.js"
    script.write_text(harness)
    result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(result.stdout) == [ok for _h, _b, ok in cases]
