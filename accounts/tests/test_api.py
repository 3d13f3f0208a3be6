import io
from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, Invitation, ManagementToken, Membership, Role
from accounts.services import management_token_create, management_token_revoke
from project.secrets import sha256_hex

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token_for(team_a, owner_a):
    def make(*scopes: str, **kwargs):
        return management_token_create(team=team_a, name="t", scopes=scopes, actor=owner_a, **kwargs)[1]

    return make


def api(secret: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def test_token_is_stored_as_a_hash_with_a_visible_prefix(team_a, owner_a):
    token, secret = management_token_create(team=team_a, name="CI", scopes=["read", "write"], actor=owner_a)
    assert secret.startswith(token.prefix + "_")
    assert token.prefix.startswith("gmt_")
    assert token.token_hash == sha256_hex(secret)
    assert secret not in str(ManagementToken.objects.filter(pk=token.pk).values().first())
    assert AuditEvent.objects.filter(action="token.created", team=team_a, after__scopes=["read", "write"]).exists()


def test_read_token_lists_the_team_and_members_and_records_use(team_a, teammate_a, token_for):
    secret = token_for("read")
    client = api(secret)
    assert client.get("/api/v1/teams/").json() == [
        {
            "slug": team_a.slug,
            "name": "Team A",
            "require_mfa": False,
            "created_at": team_a.created_at.isoformat().replace("+00:00", "Z"),
            "role": "admin",
        }
    ]
    members = client.get(f"/api/v1/teams/{team_a.slug}/members/").json()
    assert [(m["email"], m["role"]) for m in members] == [("alice@a.example", "owner"), ("bob@a.example", "developer")]
    assert ManagementToken.objects.get().last_used_at is not None


def test_read_token_cannot_write(team_a, token_for):
    response = api(token_for("read")).post(
        f"/api/v1/teams/{team_a.slug}/invitations/",
        {"email": "x@example.com", "role": "viewer"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert response.json() == {"code": "permission_denied", "detail": "This token lacks the 'write' scope"}
    assert not Invitation.objects.exists()


def test_write_token_invites_changes_roles_and_removes(team_a, teammate_a, token_for):
    client = api(token_for("read", "write"))
    created = client.post(
        f"/api/v1/teams/{team_a.slug}/invitations/",
        {"email": "new@example.com", "role": "finance"},
        content_type="application/json",
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["email"], body["role"], body["status"], body["invited_by"]) == (
        "new@example.com",
        "finance",
        "pending",
        "alice@a.example",
    )
    assert "token" not in body
    member_id = Membership.objects.get(user=teammate_a).pk
    changed = client.patch(
        f"/api/v1/teams/{team_a.slug}/members/{member_id}/", {"role": "viewer"}, content_type="application/json"
    )
    assert changed.json()["role"] == "viewer"
    assert client.delete(f"/api/v1/teams/{team_a.slug}/members/{member_id}/").status_code == 204
    assert not Membership.objects.filter(pk=member_id).exists()
    assert client.delete(f"/api/v1/teams/{team_a.slug}/invitations/{body['id']}/").status_code == 204
    assert Invitation.objects.get().status == Invitation.Status.REVOKED


def test_tokens_never_do_owner_things(team_a, owner_a, token_for):
    client = api(token_for("read", "write"))
    owner_id = Membership.objects.get(user=owner_a).pk
    response = client.patch(
        f"/api/v1/teams/{team_a.slug}/members/{owner_id}/", {"role": "viewer"}, content_type="application/json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "owner_role"
    invite_owner = client.post(
        f"/api/v1/teams/{team_a.slug}/invitations/",
        {"email": "o@example.com", "role": "owner"},
        content_type="application/json",
    )
    assert invite_owner.status_code == 400
    assert invite_owner.json()["code"] == "invalid"
    assert "role" in invite_owner.json()["errors"]


def test_bad_input_gets_a_machine_readable_400(team_a, token_for):
    response = api(token_for("read", "write")).post(
        f"/api/v1/teams/{team_a.slug}/invitations/",
        {"email": "not-an-email", "role": "viewer"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": "The request body is not valid.",
        "errors": {"email": ["Enter a valid email address."]},
    }
    assert not Invitation.objects.exists()


@pytest.mark.parametrize("header", ["Bearer gmt_nope_nope", "Bearer", "Bearer something-else", "Bearer a b"])
def test_bad_tokens_are_401(team_a, header):
    response = Client(HTTP_AUTHORIZATION=header).get(f"/api/v1/teams/{team_a.slug}/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    assert response["WWW-Authenticate"] == 'Bearer realm="gatehouse"'


def test_revoked_and_expired_tokens_stop_working(team_a, owner_a):
    token, secret = management_token_create(
        team=team_a, name="short", scopes=["read"], actor=owner_a, expires_at=timezone.now() + timedelta(days=1)
    )
    assert api(secret).get(f"/api/v1/teams/{team_a.slug}/").status_code == 200
    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=1)):
        assert api(secret).get(f"/api/v1/teams/{team_a.slug}/").status_code == 401
    management_token_revoke(token=token, actor=owner_a)
    assert api(secret).get(f"/api/v1/teams/{team_a.slug}/").status_code == 401


def test_session_users_use_the_api_with_their_role(client_for, team_a, teammate_a):
    client = client_for(teammate_a)  # a developer
    assert client.get(f"/api/v1/teams/{team_a.slug}/").status_code == 200
    assert client.get(f"/api/v1/teams/{team_a.slug}/members/").status_code == 403


def test_session_api_writes_need_the_csrf_token(team_a, owner_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner_a)
    response = client.patch(f"/api/v1/teams/{team_a.slug}/", {"name": "Hijacked"}, content_type="application/json")
    assert response.status_code == 403
    team_a.refresh_from_db()
    assert team_a.name == "Team A"


def test_tokens_page_shows_the_secret_once(client_for, owner_a, team_a):
    client = client_for(owner_a)
    created = client.post(
        f"/t/{team_a.slug}/tokens/", {"name": "Deploys", "scopes": ["read", "write"], "expires_in": "30"}
    )
    secret = created.context["created_secret"]
    assert secret.startswith("gmt_")
    assert secret in created.content.decode()
    assert created["Cache-Control"] == "no-store"
    token = ManagementToken.objects.get()
    assert token.expires_at.date() == (timezone.now() + timedelta(days=30)).date()
    assert secret not in client.get(f"/t/{team_a.slug}/tokens/").content.decode()
    client.post(f"/t/{team_a.slug}/tokens/{token.pk}/revoke")
    assert ManagementToken.objects.get().revoked_at is not None


def test_tokens_page_reports_missing_scopes_next_to_the_field(client_for, owner_a, team_a):
    response = client_for(owner_a).post(f"/t/{team_a.slug}/tokens/", {"name": "x", "expires_in": "never"})
    assert response.status_code == 400
    assert response.context["form"].errors["scopes"]
    assert not ManagementToken.objects.exists()


def test_create_management_token_command_prints_the_token_once(team_a):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_management_token", "CI", team=team_a.slug, scopes="read,write", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert secret.startswith("gmt_")
    assert secret not in err.getvalue()
    token = ManagementToken.objects.get()
    assert token.token_hash == sha256_hex(secret)
    assert token.scopes == ["read", "write"]
    assert api(secret).get(f"/api/v1/teams/{team_a.slug}/members/").status_code == 200
    with pytest.raises(CommandError, match="No team"):
        call_command("create_management_token", "x", team="missing")
    with pytest.raises(CommandError, match="Choose read, write or both"):
        call_command("create_management_token", "x", team=team_a.slug, scopes="admin")


def test_the_schema_documents_the_team_api(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/teams/{team_slug}/members/" in schema["paths"]
    assert "/api/v1/teams/{team_slug}/invitations/" in schema["paths"]
    assert schema["components"]["securitySchemes"]["managementToken"]["scheme"] == "bearer"
    docs = client.get("/api/docs/")  # the API reference page, in the app's layout
    assert docs.status_code == 200
    page = docs.content.decode()
    members = schema["paths"]["/api/v1/teams/{team_slug}/members/"]["get"]
    assert f'<h3 id="op-{members["operationId"]}"' in page
    assert f'href="#op-{members["operationId"]}"' in page
    assert '<header class="topbar">' in page


def test_invitations_api_lists_open_ones_with_status(team_a, owner_a, token_for):
    client = api(token_for("read", "write"))
    client.post(
        f"/api/v1/teams/{team_a.slug}/invitations/",
        {"email": "a@example.com", "role": "viewer"},
        content_type="application/json",
    )
    listed = client.get(f"/api/v1/teams/{team_a.slug}/invitations/").json()
    assert [(i["email"], i["status"]) for i in listed] == [("a@example.com", "pending")]
    resent = client.post(f"/api/v1/teams/{team_a.slug}/invitations/{listed[0]['id']}/resend/")
    assert resent.status_code == 429
    assert resent.json()["code"] == "resend_too_soon"
    assert Invitation.objects.get().role == Role.VIEWER
