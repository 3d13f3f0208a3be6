"""Every page of the tour, for each role, at desktop and phone sizes, in light and dark: axe-core (WCAG 2.0/2.1 A and
AA, plus the label-in-name rule) finds nothing serious or critical, no page is wider than the screen, every
aria-describedby points at something, and keyboard focus is visible (a 2 px outline at 3:1 against what is behind it).

axe-core is vendored from the npm registry (tests/browser/vendor/, scripts/vendor.sh) and injected by a Playwright init
script, so the page runs it under its real Content-Security-Policy. A page joins the tour by being added to
`team_pages`, `ACCOUNT_PAGES`, `ANONYMOUS_PAGES` or `OPERATOR_PAGES`; a role that may not see a page (403/404) skips
it. Screenshots of every page at phone size, in both schemes, go to artifacts/screenshots/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from accounts.models import Team, User
from billing.models import Invoice
from endpoints.models import ApiKey, Endpoint
from project.demo import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TEAM_NAME, DEMO_TEAMMATES
from tests.fixtures import seed_demo, seed_usage

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SIZES = {"desktop": {"width": 1360, "height": 900}, "phone": {"width": 390, "height": 844}}
SCHEMES = ("light", "dark")
STAFF_EMAIL = "operator@gatehouse.dev"

ANONYMOUS_PAGES = ["/", "/accounts/login/", "/accounts/signup/", "/accounts/password/reset/", "/api/docs/"]
ACCOUNT_PAGES = [
    "/teams/new/",
    "/account/security/",
    "/accounts/email/",
    "/accounts/password/change/",
    "/accounts/2fa/",
    "/accounts/2fa/totp/activate/",
    "/api/docs/",
]
OPERATOR_PAGES = ["/operator/", "/operator/quarantine/", "/operator/billing/"]


@dataclass(frozen=True)
class Demo:
    slug: str
    endpoint: str
    key: str
    invoice: int


def team_pages(demo: Demo) -> list[str]:
    team = f"/t/{demo.slug}/"
    endpoint = f"{team}endpoints/{demo.endpoint}/"
    return [
        team,
        f"{team}endpoints/",
        f"{team}endpoints/new/",
        endpoint,
        f"{endpoint}usage/",
        f"{endpoint}keys/",
        f"{endpoint}security/",
        f"{endpoint}settings/",
        f"{team}keys/{demo.key}/usage/",
        f"{team}explorer/",
        f"{team}members/",
        f"{team}tokens/",
        f"{team}audit/",
        f"{team}budgets/",
        f"{team}alerts/",
        f"{team}webhooks/",
        f"{team}settings/",
        f"{team}settings/delete",
        f"{team}billing/",
        f"{team}billing/plans/",
        f"{team}billing/invoices/",
        f"{team}billing/invoices/{demo.invoice}/",
    ]


# Runs in the page: axe with the WCAG A/AA tags and the label-in-name rule (WCAG 2.5.3, which axe ships as
# experimental), then the checks axe has no rule for.
AUDIT = """async () => {
  const result = await axe.run(document, {
    runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
    rules: {"label-content-name-mismatch": {enabled: true}},
    resultTypes: ["violations"],
  });
  const violations = result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                  targets: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + " :: " + n.failureSummary)}));
  const missing = [];
  for (const el of document.querySelectorAll("[aria-describedby], [aria-labelledby]")) {
    for (const attr of ["aria-describedby", "aria-labelledby"]) {
      for (const id of (el.getAttribute(attr) || "").split(/\\s+/).filter(Boolean)) {
        if (!document.getElementById(id)) missing.push(`${el.tagName.toLowerCase()}[${attr}=${id}]`);
      }
    }
  }
  return {violations, missing, scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth};
}"""

# The focus indicator of the focused element: its outline's width, and the contrast of its colour against the first
# opaque background behind the element (WCAG 1.4.11 asks 3:1).
FOCUS = """() => {
  let el = document.activeElement;
  if (!el || el === document.body) return null;
  // A control drawn by its label (a visually hidden radio in a pill): the ring is the label's (:focus-within).
  if (getComputedStyle(el).opacity === "0" && el.closest("label")) el = el.closest("label");
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  let node = el.parentElement, behind = null;
  while (node) {
    const c = rgb(getComputedStyle(node).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.99)) { behind = c.slice(0, 3); break; }
    node = node.parentElement;
  }
  behind = behind || rgb(getComputedStyle(document.documentElement).backgroundColor).slice(0, 3);
  const style = getComputedStyle(el);
  const ring = rgb(style.outlineColor).slice(0, 3);
  const [a, b] = [lum(ring), lum(behind)].sort((x, y) => y - x);
  return {
    element: el.tagName.toLowerCase() + (typeof el.className === "string" && el.className ? "." + el.className : "")
      + (el.name ? `[name=${el.name}]` : "") + ` ${el.offsetWidth}x${el.offsetHeight}`,
    name: (el.getAttribute("aria-label") || el.textContent || "").trim().slice(0, 40),
    outline: style.outlineStyle, width: parseFloat(style.outlineWidth) || 0,
    contrast: Math.round(((a + 0.05) / (b + 0.05)) * 100) / 100,
  };
}"""
FOCUS_STOPS = 6


@pytest.fixture
def demo(db) -> Demo:
    seed_demo()
    team = Team.objects.get(name=DEMO_TEAM_NAME)
    seed_usage(team, days=1, rate_per_minute=2)
    endpoint = Endpoint.objects.filter(team=team, deleted_at__isnull=True).order_by("created_at").first()
    key = ApiKey.objects.filter(team=team).usable().order_by("created_at").first()
    invoice = Invoice.objects.filter(team=team).order_by("-created").first()
    assert endpoint is not None
    assert key is not None
    assert invoice is not None
    User.objects.create_user(email=STAFF_EMAIL, password=DEMO_PASSWORD, is_staff=True, name="Olive Operator")
    return Demo(team.slug, endpoint.public_id, key.key_id, invoice.pk)


def _sign_in(checked, email: str) -> None:
    page = checked.page
    checked.visit("/accounts/login/", "login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.locator("main").get_by_role("button", name="Sign In").click()
    page.wait_for_load_state("networkidle")
    assert "/accounts/login/" not in page.url, f"{email} could not sign in"


# Counts htmx requests in flight (the panels load after the page), so a page is audited once they have landed.
PENDING = """
window.__pending = 0;
document.addEventListener("htmx:beforeSend", (event) => {
  window.__pending += 1;
  event.detail.xhr.addEventListener("loadend", () => { window.__pending -= 1; });
});
"""
IDLE = "() => document.readyState === 'complete' && window.__pending === 0"
FRAMES = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"


def _settle(page) -> None:
    """Wait for the htmx panels (and the panels they load) and a frame for layout and charts."""
    for _ in range(2):  # a swapped panel may start loading the next within the same frame
        page.wait_for_function(IDLE)
        page.evaluate(FRAMES)


def _focus_findings(page) -> list[str]:
    findings = []
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    page.locator("body").focus()
    for _ in range(FOCUS_STOPS):
        page.keyboard.press("Tab")
        ring = page.evaluate(FOCUS)
        if ring is None:
            continue
        if ring["outline"] == "none" or ring["width"] < 2 or ring["contrast"] < 3:
            findings.append(f"focus on {ring['element']} '{ring['name']}': {ring}")
    return findings


def _audit_pages(browser_pages, paths: list[str], *, email: str | None, label: str) -> list[str]:
    """Visit each page and audit it in each scheme and size; return every finding (empty is the pass). The scheme
    switches live (prefers-color-scheme, as when the system's setting changes), so each page loads once."""
    findings: list[str] = []
    audited = 0
    checked = browser_pages(label)
    page = checked.page
    page.add_init_script(path=str(AXE))
    page.add_init_script(PENDING)
    checked.allow_console_error("the server responded with a status of 403")  # a page this role may not see
    checked.allow_console_error("the server responded with a status of 404")
    if email:
        _sign_in(checked, email)
    for path in paths:
        page.emulate_media(color_scheme=SCHEMES[0], reduced_motion="reduce")
        page.set_viewport_size(SIZES["desktop"])
        response = page.goto(checked.base_url + path)
        assert response is not None
        if response.status in (403, 404):
            continue  # not this role's page
        assert response.status == 200, f"{path}: {response.status}"
        audited += 1
        for scheme in SCHEMES:
            # Reduced motion: Pico then skips its colour transitions, so axe never reads a colour half-way through
            # the switch from one scheme to the other (a state nobody looks at).
            page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
            for size_name, size in SIZES.items():
                page.set_viewport_size(size)
                page.wait_for_timeout(150)  # the page re-marks its scroll boxes 100 ms after a resize
                _settle(page)
                where = f"{path} [{label}, {scheme}, {size_name}]"
                result = page.evaluate(AUDIT)
                findings += [f"{where} axe {json.dumps(v)}" for v in result["violations"]]
                findings += [f"{where} aria reference to a missing id: {m}" for m in result["missing"]]
                if result["scrollWidth"] > result["innerWidth"]:
                    findings.append(f"{where} scrolls sideways: {result['scrollWidth']} px in {result['innerWidth']}")
                if size_name == "phone":
                    checked.snap(f"{path}-{scheme}-phone")
                else:
                    findings += [f"{where} {f}" for f in _focus_findings(page)]
    assert audited, f"{label}: no page of the tour was audited"
    return findings


def _assert_none(findings: list[str]) -> None:
    assert not findings, f"{len(findings)} finding(s):\n" + "\n".join(findings)


ROLE_EMAILS = {role: email for email, _name, role in DEMO_TEAMMATES}


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_signed_out_pages_are_accessible(browser_pages, demo):
    _assert_none(_audit_pages(browser_pages, ANONYMOUS_PAGES, email=None, label="anonymous"))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_owners_pages_are_accessible(browser_pages, demo):
    _assert_none(_audit_pages(browser_pages, team_pages(demo) + ACCOUNT_PAGES, email=DEMO_EMAIL, label="owner"))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ["admin", "developer", "finance", "viewer"])
def test_each_roles_team_pages_are_accessible(browser_pages, demo, role):
    _assert_none(_audit_pages(browser_pages, team_pages(demo), email=ROLE_EMAILS[role], label=role))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_operators_pages_are_accessible(browser_pages, demo):
    _assert_none(_audit_pages(browser_pages, OPERATOR_PAGES, email=STAFF_EMAIL, label="operator"))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_relay_drawer_is_accessible_and_closes_with_a_visible_button(browser_pages, demo):
    for scheme in SCHEMES:
        checked = browser_pages(f"drawer-{scheme}")
        page = checked.page
        page.emulate_media(color_scheme=scheme)
        page.add_init_script(path=str(AXE))
        page.add_init_script(PENDING)
        page.set_viewport_size(SIZES["phone"])
        _sign_in(checked, DEMO_EMAIL)
        checked.visit(f"/t/{demo.slug}/explorer/", "explorer")
        page.locator("table.relays tbody tr td a").first.click()
        drawer = page.locator("#relay-drawer")
        expect(drawer).to_be_visible()
        _settle(page)
        close = drawer.get_by_role("button", name="Close")
        expect(close).to_be_visible()
        box = close.bounding_box()
        assert box is not None
        assert min(box["width"], box["height"]) >= 24  # a target a finger can hit (WCAG 2.5.8)
        assert close.inner_text().strip() == "×"  # something to see, not an empty square
        checked.snap(f"relay-drawer-{scheme}")
        result = page.evaluate(AUDIT)
        assert result["violations"] == []
        assert result["missing"] == []
        close.click()
        expect(drawer).to_be_hidden()
