"""The API reference page (/api/docs/): every operation of the schema /api/schema/ serves, with its anchor, fields,
links and examples, in the app's layout; schema text escaped; nothing inline for the CSP to refuse."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.test import Client

from project import api_docs
from project.api_docs import build_reference, render_inline, render_text, type_html


class Page(HTMLParser):
    """What the tests look at in a page: ids, in-page links, inline styles and scripts, elements by tag."""

    def __init__(self, html: str):
        super().__init__()
        self.ids: list[str] = []
        self.fragment_links: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if attributes.get("id"):
            self.ids.append(attributes["id"] or "")
        href = attributes.get("href") or ""
        if href.startswith("#"):
            self.fragment_links.append(href[1:])


@pytest.fixture
def schema(db) -> dict:  # type: ignore[no-untyped-def]
    return Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()


@pytest.fixture
def page(db) -> str:  # type: ignore[no-untyped-def]
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    return response.content.decode()


def _operation_html(page: str, anchor: str) -> str:
    start = page.index(f'<h3 id="{anchor}"')
    return page[start : page.index("</article>", start)]


def test_the_page_is_public_in_the_apps_layout(page):
    assert '<html lang="en">' in page
    assert '<header class="topbar">' in page
    assert '<a class="skip-link" href="#main">' in page
    assert "data-theme-toggle" in page
    assert '<footer class="site-footer' in page
    assert "<title>API reference · Gatehouse</title>" in page


def test_signed_in_people_read_it_too(client_for, owner_a, team_a):
    response = client_for(owner_a).get("/api/docs/")
    assert response.status_code == 200
    assert b'<nav class="api-toc" aria-label="API operations">' in response.content


def test_only_get_and_head(db):
    assert Client().head("/api/docs/").status_code == 200
    assert Client().post("/api/docs/").status_code == 405


def test_every_operation_of_the_schema_is_on_the_page_with_its_anchor(schema, page):
    parsed = Page(page)
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    assert len(operations) >= 30
    for path, method, operation in operations:
        anchor = f"op-{operation['operationId']}"
        assert parsed.ids.count(anchor) == 1, anchor
        assert anchor in parsed.fragment_links, f"{anchor} is missing from the table of contents"
        heading = _operation_html(page, anchor).split("</h3>")[0]
        assert f'<span class="http-method http-method-{method}">{method.upper()}</span>' in heading
        assert f'<span class="api-path">{path.replace("/", "/<wbr>")}</span>' in heading
    assert len(re.findall(r'<article class="api-operation"', page)) == len(operations)


def test_a_request_body_field_shows_its_type_and_whether_it_is_required(schema, page):
    operation = schema["paths"]["/api/v1/teams/{team_slug}/invitations/"]["post"]
    body = _operation_html(page, f"op-{operation['operationId']}")
    assert '<code>application/json</code>: <a href="#schema-InvitationCreateInputRequest">' in body
    email = re.search(r"<th scope=\"row\"><code>email</code></th>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", body)
    assert email is not None
    assert email.groups() == ("string (email)", "yes")
    role = re.search(r"<th scope=\"row\"><code>role</code></th>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", body)
    assert role is not None
    assert role.groups() == ('<a href="#schema-GrantableRoleEnum">GrantableRoleEnum</a>', "yes")


def test_every_in_page_link_lands_on_an_element_of_the_page(page):
    parsed = Page(page)
    assert len(parsed.ids) == len(set(parsed.ids)), "duplicate ids"
    assert not set(parsed.fragment_links) - set(parsed.ids)
    schema_links = {link for link in parsed.fragment_links if link.startswith("schema-")}
    assert {"schema-InvitationCreateInputRequest", "schema-Error", "schema-GrantableRoleEnum"} <= schema_links


def test_each_operation_names_its_credential_and_has_a_curl_example(schema, page):
    members = schema["paths"]["/api/v1/teams/{team_slug}/members/"]["get"]
    html = _operation_html(page, f"op-{members['operationId']}")
    assert "<code>Authorization: Bearer gmt_…</code>" in html
    curl = "curl &quot;http://testserver/api/v1/teams/TEAM_SLUG/members/&quot; \\\n"
    curl += "  -H &quot;Authorization: Bearer gmt_…&quot;</code>"
    assert curl in html
    assert 'data-copy-target="#curl-op-' in html
    feed = schema["paths"]["/api/gateway/v1/config"]["get"]
    html = _operation_html(page, f"op-{feed['operationId']}")
    assert "<code>Authorization: Bearer ggw_…</code>" in html
    assert "gmt_" not in html


def test_the_curl_example_of_a_write_sends_the_required_fields():
    reference = build_reference(
        {
            "paths": {
                "/api/v1/teams/{team_slug}/things/": {
                    "post": {
                        "operationId": "things_create",
                        "parameters": [
                            {"name": "team_slug", "in": "path", "required": True, "schema": {"type": "string"}},
                            {"name": "Idempotency-Key", "in": "header", "required": True, "schema": {"type": "string"}},
                            {"name": "dry_run", "in": "query", "required": True, "schema": {"type": "boolean"}},
                        ],
                        "requestBody": {
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}},
                            "required": True,
                        },
                        "security": [{"token": []}],
                        "responses": {"201": {"description": "Made."}},
                    }
                }
            },
            "components": {
                "schemas": {
                    "Thing": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "role": {"$ref": "#/components/schemas/RoleEnum"},
                            "note": {"type": "string"},
                        },
                        "required": ["name", "role"],
                    },
                    "RoleEnum": {"type": "string", "enum": ["admin", "viewer"]},
                },
                "securitySchemes": {"token": {"type": "http", "scheme": "bearer", "bearerFormat": "gmt_<id>_<s>"}},
            },
        },
        site_url="https://gatehouse.example",
    )
    (operation,) = reference.operations
    assert operation.curl == (
        'curl -X POST "https://gatehouse.example/api/v1/teams/TEAM_SLUG/things/?dry_run=DRY_RUN" \\\n'
        '  -H "Authorization: Bearer gmt_…" \\\n'
        '  -H "Idempotency-Key: IDEMPOTENCY_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        """  -d '{"name": "…", "role": "admin"}'"""
    )
    assert [(f.name, f.required, f.enum) for f in operation.body.fields] == [
        ("name", True, ()),
        ("role", True, ("admin", "viewer")),
        ("note", False, ()),
    ]


def test_the_schema_can_be_downloaded_from_the_page(page, db):
    assert 'href="/api/schema/" download="gatehouse-openapi.yaml"' in page
    assert 'href="/api/schema/?format=json" download="gatehouse-openapi.json"' in page
    as_json = Client().get("/api/schema/?format=json")
    assert as_json.status_code == 200
    assert as_json.json()["info"]["title"] == "Gatehouse API"


def test_nothing_inline_for_the_content_security_policy_to_refuse(page):
    parsed = Page(page)
    assert [tag for tag, attrs in parsed.tags if "style" in attrs] == []
    assert [tag for tag, attrs in parsed.tags if any(name.startswith("on") for name in attrs)] == []
    assert all(attrs.get("src") for tag, attrs in parsed.tags if tag == "script")
    assert "<style" not in page


def test_every_table_sits_in_a_scroll_box_with_a_name_for_when_it_scrolls(page):
    # static/js/app.js makes a box that does scroll focusable, a region named by data-scroll-label (the browser tour
    # checks it at phone size); a box that fits stays out of the tab order.
    parsed = Page(page)
    regions = [attrs for tag, attrs in parsed.tags if tag == "div" and "table-scroll" in (attrs.get("class") or "")]
    assert len(regions) == page.count("<table")
    assert all(r.get("data-scroll-label") for r in regions)


# --- schema text is escaped ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("Send `Authorization: Bearer gmt_…`.", "Send <code>Authorization: Bearer gmt_…</code>."),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("`<script>` & <b>", "<code>&lt;script&gt;</code> &amp; &lt;b&gt;"),
        ('Errors are `{"code": …}`', "Errors are <code>{&quot;code&quot;: …}</code>"),
        ("an `unclosed span", "an `unclosed span"),
    ],
)
def test_inline_markdown_renders_code_and_escapes_everything_else(text, html):
    assert render_inline(text) == html


def test_blocks_become_paragraphs_and_bullet_lists():
    assert render_text("One\nline.\n\n* `a` - A\n* `<b>` - B") == (
        "<p>One line.</p><ul><li><code>a</code> - A</li><li><code>&lt;b&gt;</code> - B</li></ul>"
    )
    assert render_text(None) == ""


def test_type_names_are_escaped_and_references_linked():
    assert type_html({"type": "array", "items": {"$ref": "#/components/schemas/Key"}}) == (
        'array of <a href="#schema-Key">Key</a>'
    )
    nullable_enum = {"oneOf": [{"$ref": "#/components/schemas/RoleEnum"}, {"$ref": "#/components/schemas/NullEnum"}]}
    assert type_html(nullable_enum) == '<a href="#schema-RoleEnum">RoleEnum</a> or null'
    assert type_html({"type": "string", "format": "<img>", "nullable": True}) == "string (&lt;img&gt;) or null"


def test_hostile_schema_text_is_escaped_on_the_page(db, monkeypatch):
    evil = "<script>alert(1)</script>"
    reference = build_reference(
        {
            "info": {"title": evil, "version": "1", "description": f"`{evil}` {evil}"},
            "paths": {
                "/api/x/": {
                    "get": {
                        "operationId": "x",
                        "summary": evil,
                        "description": evil,
                        "tags": [evil],
                        "parameters": [
                            {"name": evil, "in": "query", "description": evil, "schema": {"type": "string"}}
                        ],
                        "responses": {"200": {"description": evil}},
                    }
                }
            },
            "components": {"schemas": {"Evil": {"type": "object", "description": evil, "properties": {evil: {}}}}},
        },
        site_url="http://testserver",
    )
    monkeypatch.setattr(api_docs, "api_reference", lambda site_url: reference)
    page = Client().get("/api/docs/").content.decode()
    assert "<script>alert" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 8
