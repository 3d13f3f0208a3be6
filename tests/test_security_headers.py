import pytest

PAGES = ["/", "/accounts/login/", "/accounts/signup/", "/healthz"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_every_page_carries_a_strict_content_security_policy(client, path):
    response = client.get(path)
    assert response.status_code == 200
    directives = [part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")]
    policy = {name: value[0] if value else "" for name, *value in directives if name}
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert "unsafe-eval" not in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_the_usual_security_headers_are_set(client):
    response = client.get("/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


@pytest.mark.django_db
def test_pages_have_no_inline_script_or_style(client):
    for path in PAGES[:3]:
        html = client.get(path).content.decode()
        assert "<style" not in html
        assert " style=" not in html
        for tag in html.split("<script")[1:]:
            assert tag.lstrip().startswith("src="), f"inline script on {path}: <script{tag[:80]}"


def test_request_id_is_generated_or_echoed(client):
    generated = client.get("/healthz")["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/healthz", HTTP_X_REQUEST_ID="gateway-abc-123")["X-Request-ID"] == "gateway-abc-123"
    # Anything unusual is replaced rather than echoed into logs.
    assert client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")["X-Request-ID"] != "bad id\nwith newline"
