import csv
import io

import pytest
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from allauth.mfa.totp.internal.auth import yield_hotp_counters_from_time as counters
from django.core import mail
from django.test import Client

from accounts.models import AuditEvent, Membership, Role, Team, User
from accounts.services import audit_record, member_change_role, ownership_transfer, team_create
from project.errors import ServiceError
from tests.fixtures import PASSWORD

pytestmark = pytest.mark.django_db


def totp_code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, next(counters())))


# --- sign-up, sign-in ----------------------------------------------------------------------


def test_sign_up_creates_a_first_team_and_sends_a_verification_email(client):
    response = client.post(
        "/accounts/signup/",
        {
            "name": "Grace Hopper",
            "email": "grace@example.com",
            "password1": "a-long-pass-phrase-1",
            "password2": "a-long-pass-phrase-1",
        },
    )
    user = User.objects.get(email="grace@example.com")
    membership = Membership.objects.get(user=user)
    assert membership.role == Role.OWNER
    assert membership.team.name == "Grace's team"
    assert response.url == f"/t/{membership.team.slug}/"
    assert user.password.startswith("md5$")  # tests hash fast; production's first hasher is Argon2 (test_settings)
    (message,) = mail.outbox
    assert message.to == ["grace@example.com"]
    assert "/accounts/confirm-email/" in message.body
    assert "Confirm my email address" in message.alternatives[0][0]
    assert not user.emailaddress_set.get().verified


def test_following_the_verification_link_verifies_the_address(client):
    client.post(
        "/accounts/signup/",
        {"email": "v@example.com", "password1": "a-long-pass-phrase-1", "password2": "a-long-pass-phrase-1"},
    )
    link = next(line for line in mail.outbox[0].body.split() if "/accounts/confirm-email/" in line)
    path = link.split("testserver", 1)[1]
    assert client.get(path).status_code == 200  # a page with a confirm button (no change on GET)
    client.post(path)
    assert User.objects.get(email="v@example.com").emailaddress_set.get().verified
    assert AuditEvent.objects.filter(action="auth.email_verified", actor__email="v@example.com").exists()


def test_failed_sign_in_says_the_same_for_known_and_unknown_emails_and_is_audited(client, make_user):
    make_user("known@example.com")
    known = client.post("/accounts/login/", {"login": "known@example.com", "password": "wrong-password"})
    unknown = client.post("/accounts/login/", {"login": "nobody@example.com", "password": "wrong-password"})
    assert known.status_code == unknown.status_code == 200
    known_errors = known.context["form"].non_field_errors()
    assert known_errors == unknown.context["form"].non_field_errors()
    assert "not correct" in known_errors[0]
    events = AuditEvent.objects.filter(action="auth.login_failed").order_by("id")
    assert [(e.actor_email, e.actor_id is not None) for e in events] == [
        ("known@example.com", True),
        ("nobody@example.com", False),
    ]


def test_repeated_failures_lock_the_account_without_revealing_it_exists(make_user):
    user = make_user("target@example.com")
    client = Client()
    for _ in range(5):
        client.post("/accounts/login/", {"login": user.email, "password": "wrong"})
    locked = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert not locked.wsgi_request.user.is_authenticated  # even the right password is refused for now
    message = locked.context["form"].non_field_errors()[0]
    assert "Too many failed login attempts" in message
    for _ in range(6):
        other = client.post("/accounts/login/", {"login": "ghost@example.com", "password": "wrong"})
    assert other.context["form"].non_field_errors()[0] == message  # the same for an address with no account
    assert AuditEvent.objects.filter(action="auth.login_throttled", actor=user).exists()


def test_repeated_failures_from_one_address_are_throttled_across_accounts(make_user):
    client = Client(REMOTE_ADDR="203.0.113.9")
    for n in range(10):
        client.post("/accounts/login/", {"login": f"user{n}@example.com", "password": "wrong"})
    user = make_user("fresh@example.com")
    response = client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})
    assert "Too many failed login attempts" in response.context["form"].non_field_errors()[0]


def test_successful_sign_in_is_audited(client, owner_a):
    client.post("/accounts/login/", {"login": owner_a.email, "password": PASSWORD})
    event = AuditEvent.objects.get(action="auth.login")
    assert event.actor == owner_a
    assert event.ip == "127.0.0.1"
    assert client.get("/account/security/").context["events"][0] == event


def test_totp_sign_in_asks_for_a_code(client, owner_a):
    secret = generate_totp_secret()
    TOTP.activate(owner_a, secret)
    response = client.post("/accounts/login/", {"login": owner_a.email, "password": PASSWORD})
    assert response.url == "/accounts/2fa/authenticate/"
    assert not client.get("/").wsgi_request.user.is_authenticated
    wrong = client.post(
        "/accounts/2fa/authenticate/", {"code": "000000" if totp_code(secret) != "000000" else "111111"}
    )
    assert wrong.status_code == 200
    done = client.post("/accounts/2fa/authenticate/", {"code": totp_code(secret)})
    assert done.status_code == 302
    assert client.get("/").wsgi_request.user == owner_a


# --- teams ---------------------------------------------------------------------------------


def test_create_switch_and_rename_teams(client_for, owner_a, team_a):
    client = client_for(owner_a)
    response = client.post("/teams/new/", {"name": "Second Team"})
    second = Team.objects.get(name="Second Team")
    assert response.url == f"/t/{second.slug}/"
    switcher = client.get(f"/t/{team_a.slug}/").content.decode()
    assert f'href="/t/{second.slug}/"' in switcher
    assert client.get("/").url == f"/t/{team_a.slug}/"  # the last team opened
    client.post(f"/t/{second.slug}/settings/name", {"name": "Renamed"})
    second.refresh_from_db()
    assert second.name == "Renamed"
    event = AuditEvent.objects.get(action="team.renamed")
    assert (event.before, event.after) == ({"name": "Second Team"}, {"name": "Renamed"})


def test_blank_team_name_is_refused_next_to_the_field(client_for, owner_a):
    response = client_for(owner_a).post("/teams/new/", {"name": "   "})
    assert response.status_code == 200
    assert response.context["form"].errors["name"]
    assert not Team.objects.filter(memberships__user=owner_a).exists()


def test_delete_needs_the_typed_slug(client_for, owner_a, team_a, teammate_a):
    client = client_for(owner_a)
    refused = client.post(f"/t/{team_a.slug}/settings/delete", {"confirmation": "team a"})
    assert refused.status_code == 400
    assert f"Type {team_a.slug} to confirm." in refused.content.decode()
    assert Team.objects.filter(pk=team_a.pk).exists()
    done = client.post(f"/t/{team_a.slug}/settings/delete", {"confirmation": team_a.slug})
    assert done.url == "/"
    assert Team.objects.get(pk=team_a.pk).deleted_at is not None  # closed, not erased: its invoices stay
    assert client.get(f"/t/{team_a.slug}/").status_code == 404
    assert not Membership.objects.filter(user=teammate_a).exists()  # a developer has nothing left to see
    assert AuditEvent.objects.filter(action="team.deleted", team_id=team_a.pk, team_name="Team A").exists()


def test_ownership_transfer_keeps_exactly_one_owner(team_a, owner_a, teammate_a, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # the email goes once the transfer is committed
        ownership_transfer(team=team_a, new_owner=Membership.objects.get(user=teammate_a), actor=owner_a)
    roles = dict(Membership.objects.filter(team=team_a).values_list("user__email", "role"))
    assert roles == {owner_a.email: Role.ADMIN, teammate_a.email: Role.OWNER}
    with pytest.raises(ServiceError) as error:
        ownership_transfer(team=team_a, new_owner=Membership.objects.get(user=owner_a), actor=owner_a)
    assert error.value.code == "not_owner"
    assert mail.outbox[-1].to == [teammate_a.email]


def test_owner_cannot_leave_before_transferring(client_for, owner_a, team_a, teammate_a):
    response = client_for(owner_a).post(f"/t/{team_a.slug}/leave")
    assert response.status_code == 403  # team.leave is not an owner action
    assert Membership.objects.filter(team=team_a, user=owner_a, role=Role.OWNER).exists()
    client_for(teammate_a).post(f"/t/{team_a.slug}/leave")
    assert not Membership.objects.filter(team=team_a, user=teammate_a).exists()


def test_removal_takes_effect_on_the_next_request(
    client_for, owner_a, team_a, teammate_a, django_capture_on_commit_callbacks
):
    teammate = client_for(teammate_a)
    assert teammate.get(f"/t/{team_a.slug}/").status_code == 200
    membership = Membership.objects.get(user=teammate_a)
    with django_capture_on_commit_callbacks(execute=True):
        client_for(owner_a).post(f"/t/{team_a.slug}/members/{membership.pk}/remove")
    assert teammate.get(f"/t/{team_a.slug}/").status_code == 404
    assert mail.outbox[-1].to == [teammate_a.email]
    assert "removed" in mail.outbox[-1].subject


def test_lowering_a_role_takes_effect_on_the_next_request(
    client_for, owner_a, team_a, member_of, django_capture_on_commit_callbacks
):
    admin = member_of(Role.ADMIN)
    admin_client = client_for(admin)
    assert admin_client.get(f"/t/{team_a.slug}/members/").status_code == 200
    membership = Membership.objects.get(user=admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(owner_a).post(
            f"/t/{team_a.slug}/members/{membership.pk}/role", {"role": "viewer"}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 200
    assert 'option value="viewer" selected' in response.content.decode()  # the htmx row fragment
    assert admin_client.get(f"/t/{team_a.slug}/members/").status_code == 403
    assert "now viewer" in mail.outbox[-1].subject


def test_admin_cannot_touch_the_owner_or_grant_ownership(team_a, owner_a, member_of):
    admin = Membership.objects.get(user=member_of(Role.ADMIN))
    owner = Membership.objects.get(user=owner_a)
    with pytest.raises(ServiceError):
        member_change_role(membership=owner, role=Role.VIEWER, actor=admin)
    viewer = Membership.objects.get(user=member_of(Role.VIEWER))
    with pytest.raises(ServiceError):
        member_change_role(membership=viewer, role=Role.OWNER, actor=admin)
    assert Membership.objects.get(pk=owner.pk).role == Role.OWNER
    assert Membership.objects.get(pk=viewer.pk).role == Role.VIEWER


def test_a_team_can_require_2fa_of_its_members(client_for, owner_a, team_a, teammate_a):
    owner = client_for(owner_a)
    refused = owner.post(f"/t/{team_a.slug}/settings/security", {"require_mfa": "on"})
    assert refused.status_code == 400
    assert "two-factor authentication for yourself" in refused.content.decode()
    TOTP.activate(owner_a, generate_totp_secret())
    owner.post(f"/t/{team_a.slug}/settings/security", {"require_mfa": "on"})
    team_a.refresh_from_db()
    assert team_a.require_mfa
    teammate = client_for(teammate_a)
    response = teammate.get(f"/t/{team_a.slug}/")
    assert response.url == f"/t/{team_a.slug}/2fa-required/"
    assert b"requires every member" in teammate.get(response.url).content
    TOTP.activate(teammate_a, generate_totp_secret())
    assert teammate.get(f"/t/{team_a.slug}/").status_code == 200


# --- audit log ------------------------------------------------------------------------------


def test_audit_log_is_append_only(team_a):
    event = AuditEvent.objects.filter(team=team_a).first()
    event.action = "tampered"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(team=team_a).update(action="x")
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(team=team_a).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "team.created"


def test_audit_page_filters_paginates_and_exports(client_for, owner_a, team_a, team_b, outsider_b):
    for n in range(60):
        audit_record(action="test.event", actor=owner_a, team=team_a, after={"n": n})
    audit_record(action="test.other", actor=owner_a, team=team_a)
    audit_record(action="test.event", actor=outsider_b, team=team_b)
    client = client_for(owner_a)
    page = client.get(f"/t/{team_a.slug}/audit/", {"action": "test.event"})
    assert page.context["page"].paginator.count == 60
    assert len(page.context["page"].object_list) == 50
    assert page.context["page"].object_list[0].after == {"n": 59}  # newest first
    second = client.get(f"/t/{team_a.slug}/audit/", {"action": "test.event", "page": 2})
    assert len(second.context["page"].object_list) == 10
    by_actor = client.get(f"/t/{team_a.slug}/audit/", {"actor": "nobody@example.com"})
    assert by_actor.context["page"].paginator.count == 0
    export = client.get(f"/t/{team_a.slug}/audit.csv", {"action": "test.event"})
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert rows[0][:3] == ["time", "action", "actor"]
    assert len(rows) == 61
    assert {row[2] for row in rows[1:]} == {owner_a.email}  # team B's event is not in team A's export


def test_audit_filter_rejects_a_backwards_date_range(client_for, owner_a, team_a):
    response = client_for(owner_a).get(f"/t/{team_a.slug}/audit/", {"since": "2026-05-02", "until": "2026-05-01"})
    assert response.context["form"].errors["until"] == ["The end date is before the start date."]


def test_team_events_record_actor_target_ip_and_change(client_for, owner_a, team_a, teammate_a):
    membership = Membership.objects.get(user=teammate_a)
    client_for(owner_a, REMOTE_ADDR="198.51.100.7").post(
        f"/t/{team_a.slug}/members/{membership.pk}/role", {"role": "viewer"}
    )
    event = AuditEvent.objects.get(action="member.role_changed")
    assert (event.actor, event.team, event.target_repr, event.ip) == (owner_a, team_a, teammate_a.email, "198.51.100.7")
    assert (event.before, event.after) == ({"role": "developer"}, {"role": "viewer"})


# --- CSRF on every form ---------------------------------------------------------------------


def test_every_team_form_refuses_a_post_without_the_csrf_token(owner_a, team_a, teammate_a):
    from tests.test_permissions import TEAM_ROUTES, _url

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner_a)
    ids = {
        "membership_id": Membership.objects.get(user=teammate_a).pk,
        "invitation_id": 1,
        "token_id": 1,
        "endpoint_id": "ep_any",
        "key_id": "key_any",
        "batch_id": 1,
        "relay_id": "r",
        "budget_id": 1,
        "alert_rule_id": 1,
        "webhook_id": 1,
        "delivery_id": 1,
    }
    before = AuditEvent.objects.count()
    checked = 0
    for route in TEAM_ROUTES:
        for method in route.actions:
            if method == "GET":
                continue
            url = _url(route, team_a.slug, ids)
            send = getattr(client, method.lower())
            # The API takes JSON only (a form body is 415 before anything else): send it what it would accept.
            body = {"content_type": "application/json"} if url.startswith("/api/") else {}
            plain = send(url, **body)
            as_htmx = send(url, HTTP_HX_REQUEST="true", **body)
            assert plain.status_code == 403, url
            assert as_htmx.status_code == 403, url
            checked += 1
    assert checked >= 15
    assert AuditEvent.objects.count() == before
    assert Team.objects.filter(pk=team_a.pk).exists()


def test_team_create_also_needs_the_csrf_token(owner_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner_a)
    assert client.post("/teams/new/", {"name": "x"}).status_code == 403
    assert not Team.objects.filter(name="x").exists()


def test_the_csrf_token_travels_in_hx_headers_for_htmx(client_for, owner_a, team_a):
    html = client_for(owner_a).get(f"/t/{team_a.slug}/").content.decode()
    assert 'hx-headers=\'{"X-CSRFToken": "' in html


def test_team_create_service_refuses_an_empty_name(owner_a):
    with pytest.raises(ServiceError):
        team_create(name="", owner=owner_a)


# --- account security flows ------------------------------------------------------------------


def test_a_recovery_code_signs_in_once(client, owner_a):
    from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes

    TOTP.activate(owner_a, generate_totp_secret())
    code = RecoveryCodes.activate(owner_a).get_unused_codes()[0]
    client.post("/accounts/login/", {"login": owner_a.email, "password": PASSWORD})
    client.post("/accounts/2fa/authenticate/", {"code": code})
    assert client.get("/").wsgi_request.user == owner_a
    again = Client()
    again.post("/accounts/login/", {"login": owner_a.email, "password": PASSWORD})
    again.post("/accounts/2fa/authenticate/", {"code": code})
    assert not again.get("/").wsgi_request.user.is_authenticated


def test_mfa_changes_are_audited(owner_a):
    from allauth.mfa import signals
    from allauth.mfa.models import Authenticator

    authenticator = TOTP.activate(owner_a, generate_totp_secret()).instance
    signals.authenticator_added.send(sender=Authenticator, request=None, user=owner_a, authenticator=authenticator)
    signals.authenticator_removed.send(sender=Authenticator, request=None, user=owner_a, authenticator=authenticator)
    actions = list(
        AuditEvent.objects.filter(actor=owner_a, action__startswith="mfa.")
        .order_by("id")
        .values_list("action", "after")
    )
    assert actions == [("mfa.enabled", {"type": "totp"}), ("mfa.disabled", {"type": "totp"})]


def test_password_reset_sends_a_link_in_text_and_html(client, owner_a):
    client.post("/accounts/password/reset/", {"email": owner_a.email})
    (message,) = mail.outbox
    assert message.to == [owner_a.email]
    assert "/accounts/password/reset/key/" in message.body
    assert "Choose a new password" in message.alternatives[0][0]
    client.post("/accounts/password/reset/", {"email": "stranger@example.com"})
    assert len(mail.outbox) == 2  # an unknown address gets a "no account" note, so the page cannot tell


def test_changing_email_needs_the_new_address_verified(client_for, owner_a):
    client = client_for(owner_a)
    client.post("/accounts/reauthenticate/", {"password": PASSWORD})  # sensitive: the password first
    client.post("/accounts/email/", {"action_add": "", "email": "alice.new@example.com"})
    owner_a.refresh_from_db()
    assert owner_a.email == "alice@a.example"  # unchanged until the new address is verified
    assert "/accounts/confirm-email/" in mail.outbox[-1].body
    assert mail.outbox[-1].to == ["alice.new@example.com"]
    path = next(w for w in mail.outbox[-1].body.split() if "/confirm-email/" in w).split("testserver", 1)[1]
    client.post(path)
    owner_a.refresh_from_db()
    assert owner_a.email == "alice.new@example.com"
    assert list(owner_a.emailaddress_set.values_list("email", "verified")) == [("alice.new@example.com", True)]


def test_membership_emails_go_only_after_the_change_commits(team_a, owner_a, member_of):
    """A role change or removal that rolls back sends nothing (the email is queued on commit, not sent while the
    transaction holds the member's row)."""
    from django.db import transaction

    from accounts.services import member_change_role, member_remove

    admin = Membership.objects.get(user=member_of(Role.ADMIN))
    owner = Membership.objects.get(user=owner_a, team=team_a)
    sent = len(mail.outbox)

    def change_then_fail() -> None:
        with transaction.atomic():
            member_change_role(membership=admin, role=Role.VIEWER, actor=owner)
            member_remove(membership=admin, actor=owner)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        change_then_fail()
    assert len(mail.outbox) == sent
    assert Membership.objects.get(pk=admin.pk).role == Role.ADMIN
