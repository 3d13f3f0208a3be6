"""Defects from the outside review (issue 12): tokens outliving their creator's rights, invitation abuse, the admin
login bypassing two-factor authentication and the lockout, proxies, email changes without re-authentication."""

from __future__ import annotations

import re

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.core import mail
from django.test import Client, override_settings

from accounts.models import AuditEvent, Invitation, ManagementToken, Membership, Role, Team, User
from accounts.services import (
    INVITATIONS_PER_INVITER_PER_DAY,
    INVITATIONS_PER_TEAM_PER_HOUR,
    invitation_create,
    invitation_revoke,
    management_token_create,
    member_change_role,
    member_leave,
    member_remove,
    team_set_require_mfa,
)
from accounts.tests.test_teams import totp_code
from project.errors import ServiceError
from tests.fixtures import PASSWORD

pytestmark = pytest.mark.django_db


def api(secret: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def membership(team: Team, user: User) -> Membership:
    return Membership.objects.get(team=team, user=user)


# --- management tokens follow the membership that created them ------------------------------------------


@pytest.fixture
def admin_token(team_a, member_of):
    admin = member_of(Role.ADMIN, email="admin@a.example")
    _token, secret = management_token_create(team=team_a, name="ci", scopes=["read", "write"], actor=admin)
    return admin, secret


def test_removing_the_creator_revokes_the_token_so_it_cannot_invite_them_back(team_a, owner_a, admin_token):
    admin, secret = admin_token
    member_remove(membership=membership(team_a, admin), actor=membership(team_a, owner_a))
    response = api(secret).post(
        f"/api/v1/teams/{team_a.slug}/invitations/", {"email": admin.email, "role": "admin"},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 401
    assert not Invitation.objects.filter(email=admin.email).exists()
    token = ManagementToken.objects.get()
    assert token.revoked_at is not None
    assert token.revoked_reason == "Its creator was removed from the team."
    assert AuditEvent.objects.filter(action="token.revoked", team=team_a, actor=owner_a).exists()


def test_leaving_the_team_revokes_ones_tokens(team_a, admin_token):
    admin, secret = admin_token
    member_leave(membership=membership(team_a, admin))
    assert api(secret).get(f"/api/v1/teams/{team_a.slug}/").status_code == 401
    assert ManagementToken.objects.get().revoked_reason == "Its creator left the team."


def test_a_demoted_creator_narrows_the_token_to_their_new_role(team_a, owner_a, admin_token, usage):
    admin, secret = admin_token
    client = api(secret)
    members_url = f"/api/v1/teams/{team_a.slug}/members/"
    assert client.get(members_url).status_code == 200
    member_change_role(membership=membership(team_a, admin), role=Role.DEVELOPER, actor=membership(team_a, owner_a))
    refused = client.get(members_url)
    assert refused.status_code == 403
    assert "creator's role (Developer)" in refused.json()["detail"]
    # What a developer may do, the token still does.
    assert client.get(f"/api/v1/teams/{team_a.slug}/endpoints/").status_code == 200
    assert client.get("/api/v1/teams/").json()[0]["role"] == "developer"
    member_change_role(membership=membership(team_a, admin), role=Role.VIEWER, actor=membership(team_a, owner_a))
    created = client.post(
        f"/api/v1/teams/{team_a.slug}/endpoints/", {"name": "x", "services": ["eth-mainnet"]},
        content_type="application/json",
    )  # fmt: skip
    assert created.status_code == 403


def test_an_owners_token_acts_as_an_admin_at_most(team_a, owner_a):
    _token, secret = management_token_create(team=team_a, name="o", scopes=["read", "write"], actor=owner_a)
    response = api(secret).get("/api/v1/teams/")
    assert response.json()[0]["role"] == "admin"


def test_token_creation_honours_the_teams_two_factor_rule(team_a, owner_a, member_of, client_for):
    TOTP.activate(owner_a, generate_totp_secret())
    team_set_require_mfa(team=team_a, required=True, actor=owner_a)
    admin = member_of(Role.ADMIN, email="admin2@a.example")
    with pytest.raises(ServiceError) as refused:
        management_token_create(team=team_a, name="x", scopes=["read"], actor=admin)
    assert (refused.value.code, refused.value.status) == ("mfa_required", 403)
    assert not ManagementToken.objects.exists()


def test_a_token_stops_when_its_creator_no_longer_meets_the_two_factor_rule(team_a, owner_a, admin_token):
    _admin, secret = admin_token
    assert api(secret).get(f"/api/v1/teams/{team_a.slug}/").status_code == 200
    TOTP.activate(owner_a, generate_totp_secret())
    team_set_require_mfa(team=team_a, required=True, actor=owner_a)
    refused = api(secret).get(f"/api/v1/teams/{team_a.slug}/")
    assert refused.status_code == 403
    assert "two-factor" in refused.json()["detail"]


def test_only_owners_and_admins_create_tokens_even_from_code(team_a, teammate_a):
    with pytest.raises(ServiceError) as refused:
        management_token_create(team=team_a, name="x", scopes=["read"], actor=teammate_a)
    assert refused.value.status == 403


# --- invitations: a verified sender, and a limit on how many ------------------------------------------------


def test_an_unverified_account_cannot_invite(team_a, make_user, client_for):
    owner = make_user("unverified@example.com", verified=False)
    from accounts.services import team_create

    team = team_create(name="Spam Inc", owner=owner)
    response = client_for(owner).post(f"/t/{team.slug}/members/", {"email": "victim@example.com", "role": "viewer"})
    assert response.status_code == 400
    assert "Verify your email address" in response.content.decode()
    assert not Invitation.objects.exists()
    assert mail.outbox == []


def test_invitations_are_throttled_per_team_even_when_revoked_in_between(team_a, owner_a):
    owner = membership(team_a, owner_a)
    for n in range(INVITATIONS_PER_TEAM_PER_HOUR):
        invitation, _token = invitation_create(team=team_a, email=f"p{n}@example.com", role="viewer", invited_by=owner)
        invitation_revoke(invitation=invitation, actor=owner)  # invite → revoke → invite …
    with pytest.raises(ServiceError) as refused:
        invitation_create(team=team_a, email="one-more@example.com", role="viewer", invited_by=owner)
    assert (refused.value.code, refused.value.status) == ("invitations_throttled", 429)
    assert "20 invitations in the last hour" in refused.value.message


def test_invitations_are_throttled_per_inviter_across_teams(owner_a, settings):
    from accounts import services
    from accounts.services import team_create

    sent = 0
    teams = [team_create(name=f"T{n}", owner=owner_a) for n in range(4)]
    for team in teams:
        for n in range(INVITATIONS_PER_TEAM_PER_HOUR):
            if sent == INVITATIONS_PER_INVITER_PER_DAY:
                break
            invitation_create(team=team, email=f"{team.pk}-{n}@example.com", role="viewer",
                              invited_by=membership(team, owner_a))  # fmt: skip
            sent += 1
    fresh = team_create(name="Fresh", owner=owner_a)
    with pytest.raises(ServiceError) as refused:
        invitation_create(team=fresh, email="x@example.com", role="viewer", invited_by=membership(fresh, owner_a))
    assert refused.value.status == 429
    assert "last 24 hours" in refused.value.message
    assert sent == services.INVITATIONS_PER_INVITER_PER_DAY


def test_the_api_answers_429_with_a_code_when_throttled(team_a, owner_a):
    _token, secret = management_token_create(team=team_a, name="t", scopes=["read", "write"], actor=owner_a)
    client = api(secret)
    url = f"/api/v1/teams/{team_a.slug}/invitations/"
    for n in range(INVITATIONS_PER_TEAM_PER_HOUR):
        assert client.post(url, {"email": f"x{n}@example.com", "role": "viewer"},
                           content_type="application/json").status_code == 201  # fmt: skip
    response = client.post(url, {"email": "y@example.com", "role": "viewer"}, content_type="application/json")
    assert response.status_code == 429
    assert response.json()["code"] == "invitations_throttled"


def test_the_sign_up_link_keeps_a_plus_address_intact(client, team_a, owner_a):
    owner = membership(team_a, owner_a)
    _invitation, token = invitation_create(team=team_a, email="a+b@x.io", role="viewer", invited_by=owner)
    page = client.get(f"/invitations/{token}/").content.decode()
    assert "/accounts/signup/?email=a%2Bb%40x.io" in page
    signup = client.get("/accounts/signup/?email=a%2Bb%40x.io")
    assert signup.context["form"].initial.get("email") == "a+b@x.io" or 'value="a+b@x.io"' in signup.content.decode()


# --- staff sign in through allauth: two-factor, lockout and audit ----------------------------------------


@pytest.fixture
def staff(make_user):
    user = make_user("ops@gatehouse.example")
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    user.refresh_from_db()
    return user


def test_the_admin_password_form_does_not_sign_anyone_in(client, staff):
    TOTP.activate(staff, generate_totp_secret())
    response = client.post("/admin/login/?next=/admin/", {"username": staff.email, "password": PASSWORD})
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/?next=")
    assert client.get("/admin/").status_code == 302  # still not signed in
    assert not client.get("/operator/").wsgi_request.user.is_authenticated


def test_staff_reach_the_admin_only_after_their_second_factor(client, staff):
    secret = generate_totp_secret()
    TOTP.activate(staff, secret)
    start = client.get("/admin/")
    assert start.status_code == 302
    to_login = client.get(start.url)
    assert to_login.url.startswith("/accounts/login/")
    response = client.post(to_login.url, {"login": staff.email, "password": PASSWORD})
    assert response.url == "/accounts/2fa/authenticate/"
    assert client.get("/admin/").status_code == 302  # the password alone opens nothing
    done = client.post("/accounts/2fa/authenticate/", {"code": totp_code(secret)})
    assert done.url == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert AuditEvent.objects.filter(action="auth.login", actor=staff).exists()


def test_the_admin_login_is_subject_to_the_lockout(staff):
    client = Client()
    for _ in range(5):
        client.post("/accounts/login/?next=/admin/", {"login": staff.email, "password": "wrong"})
    locked = client.post("/accounts/login/?next=/admin/", {"login": staff.email, "password": PASSWORD})
    assert not locked.wsgi_request.user.is_authenticated
    assert client.post("/admin/login/", {"username": staff.email, "password": PASSWORD}).status_code == 302
    assert client.get("/admin/").status_code == 302
    assert AuditEvent.objects.filter(action="auth.login_failed", actor=staff).count() == 5


def test_a_signed_in_non_staff_user_gets_no_admin(client_for, owner_a):
    assert client_for(owner_a).get("/admin/login/").status_code == 403


# --- behind a proxy, lockouts key on the client's address, not the proxy's ---------------------------------


def _fail_logins(n: int, **headers: str) -> None:
    for i in range(n):
        Client(REMOTE_ADDR="10.0.0.2", **headers).post("/accounts/login/", {"login": f"u{i}@ex.com", "password": "x"})


@override_settings(TRUSTED_PROXY_COUNT=1, ALLAUTH_TRUSTED_PROXY_COUNT=1)
def test_behind_our_proxy_one_client_failing_does_not_lock_out_another(make_user):
    _fail_logins(10, HTTP_X_FORWARDED_FOR="198.51.100.7")  # the attacker's address, as our proxy appended it
    user = make_user("innocent@example.com")
    other = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.50")  # same proxy, another client
    response = other.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302
    assert response.wsgi_request.user == user
    attacker = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7")  # spoofed first hop
    locked = attacker.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert "Too many failed login attempts" in locked.context["form"].non_field_errors()[0]
    event = AuditEvent.objects.filter(action="auth.login").latest("id")
    assert event.ip == "203.0.113.50"


def test_without_a_proxy_a_forged_forwarded_for_header_is_ignored(make_user):
    # Directly exposed (TRUSTED_PROXY_COUNT=0): each attempt claims a new address, the lockout still counts them all.
    for i in range(10):
        Client(REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").post(
            "/accounts/login/", {"login": f"u{i}@ex.com", "password": "x"}
        )
    user = make_user("someone@example.com")
    response = Client(REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_FOR="192.0.2.1").post(
        "/accounts/login/", {"login": user.email, "password": PASSWORD}
    )
    assert "Too many failed login attempts" in response.context["form"].non_field_errors()[0]


def test_the_proxy_count_comes_from_the_tls_proxy_setting():
    import subprocess
    import sys

    from tests.fixtures import BASE_DIR, subprocess_env

    code = "from django.conf import settings as s; print(s.TRUSTED_PROXY_COUNT, s.ALLAUTH_TRUSTED_PROXY_COUNT)"
    base = {"DJANGO_SETTINGS_MODULE": "project.settings", "DEBUG": "1"}
    outputs = {}
    for label, extra in {"direct": {}, "proxied": {"BEHIND_TLS_PROXY": "1"},
                         "two": {"BEHIND_TLS_PROXY": "1", "TRUSTED_PROXY_COUNT": "2"}}.items():  # fmt: skip
        env = subprocess_env(**base, **extra)
        env.pop("BEHIND_TLS_PROXY", None) if not extra else None
        done = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=BASE_DIR, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        outputs[label] = done.stdout.strip() or done.stderr.strip().splitlines()[-1]
    assert outputs == {"direct": "0 0", "proxied": "1 1", "two": "2 2"}
    env = subprocess_env(**base, TRUSTED_PROXY_COUNT="1")
    env.pop("BEHIND_TLS_PROXY", None)
    refused = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=BASE_DIR, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "TRUSTED_PROXY_COUNT needs BEHIND_TLS_PROXY=1" in refused.stderr


# --- email changes: re-authenticate, and tell the old address ---------------------------------------------


def test_changing_email_asks_for_the_password_again_on_an_old_session(client_for, owner_a):
    client = client_for(owner_a)  # a session whose sign-in is not recent
    response = client.post("/accounts/email/", {"action_add": "", "email": "takeover@evil.example"})
    assert response.status_code == 302
    assert response.url.startswith("/accounts/reauthenticate/")
    assert not owner_a.emailaddress_set.filter(email="takeover@evil.example").exists()
    assert mail.outbox == []
    client.post(response.url, {"password": PASSWORD})
    client.post("/accounts/email/", {"action_add": "", "email": "alice.new@example.com"})
    assert owner_a.emailaddress_set.filter(email="alice.new@example.com").exists()


def test_the_old_address_is_told_when_the_email_changes(client, owner_a):
    client.post("/accounts/login/", {"login": owner_a.email, "password": PASSWORD})
    client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    client.post("/accounts/email/", {"action_add": "", "email": "alice.new@example.com"})
    link = next(w for w in mail.outbox[-1].body.split() if "/confirm-email/" in w)
    client.post(link.split("testserver", 1)[1])
    owner_a.refresh_from_db()
    assert owner_a.email == "alice.new@example.com"
    notice = next(m for m in mail.outbox if m.to == ["alice@a.example"] and "changed" in m.body)
    assert re.search(r"changed from alice@a\.example to alice\.new@example\.com", notice.body)
