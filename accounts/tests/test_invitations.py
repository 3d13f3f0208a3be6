import re
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

from accounts.models import AuditEvent, Invitation, Membership, Role, User
from accounts.services import invitation_accept, invitation_create, invitation_resend, invitation_revoke
from project.errors import ServiceError
from project.secrets import sha256_hex

pytestmark = pytest.mark.django_db(transaction=True)  # invitations email on commit


@pytest.fixture
def owner_membership(team_a, owner_a):
    return Membership.objects.get(team=team_a, user=owner_a)


def _token_from_last_email() -> str:
    return re.search(r"/invitations/([A-Za-z0-9_-]+)/", mail.outbox[-1].body).group(1)


def test_invitation_stores_only_the_hash_and_emails_the_link(team_a, owner_membership):
    invitation, token = invitation_create(
        team=team_a, email="New@Example.com", role=Role.FINANCE, invited_by=owner_membership
    )
    assert invitation.email == "new@example.com"
    assert invitation.token_hash == sha256_hex(token)
    assert token not in str(Invitation.objects.filter(pk=invitation.pk).values().first())
    assert len(token) >= 43  # 32 random bytes
    message = mail.outbox[-1]
    assert message.to == ["new@example.com"]
    assert "Team A" in message.subject
    assert _token_from_last_email() == token
    html = message.alternatives[0][0]
    assert token in html
    assert invitation.expires_at - invitation.created_at == timedelta(days=7)
    assert AuditEvent.objects.filter(team=team_a, action="member.invited", after__role="finance").count() == 1


def test_accept_by_the_invited_address_joins_with_the_role_once(team_a, owner_membership, make_user):
    _, token = invitation_create(team=team_a, email="fin@example.com", role=Role.FINANCE, invited_by=owner_membership)
    user = make_user("fin@example.com", verified=False)
    membership = invitation_accept(token=token, user=user)
    assert membership.role == Role.FINANCE
    assert user.emailaddress_set.get().verified  # the link proved the address
    with pytest.raises(ServiceError) as reused:
        invitation_accept(token=token, user=user)
    assert reused.value.code == "invitation_used"
    assert Membership.objects.filter(team=team_a, user=user).count() == 1


def test_wrong_email_cannot_accept(team_a, owner_membership, make_user):
    _, token = invitation_create(team=team_a, email="right@example.com", role=Role.ADMIN, invited_by=owner_membership)
    with pytest.raises(ServiceError) as error:
        invitation_accept(token=token, user=make_user("wrong@example.com"))
    assert error.value.code == "wrong_email"
    assert not Membership.objects.filter(team=team_a, user__email="wrong@example.com").exists()
    assert Invitation.objects.get().status == Invitation.Status.PENDING


def test_expired_invitation_is_refused(team_a, owner_membership, make_user):
    _, token = invitation_create(team=team_a, email="late@example.com", role=Role.VIEWER, invited_by=owner_membership)
    user = make_user("late@example.com")
    with time_machine.travel(timezone.now() + timedelta(days=7, seconds=1)), pytest.raises(ServiceError) as error:
        invitation_accept(token=token, user=user)
    assert error.value.code == "invitation_expired"
    assert not Membership.objects.filter(user=user).exists()


def test_revoked_invitation_is_refused(team_a, owner_membership, make_user):
    invitation, token = invitation_create(
        team=team_a, email="gone@example.com", role=Role.VIEWER, invited_by=owner_membership
    )
    invitation_revoke(invitation=invitation, actor=owner_membership)
    with pytest.raises(ServiceError) as error:
        invitation_accept(token=token, user=make_user("gone@example.com"))
    assert error.value.code == "invitation_revoked"


def test_unknown_token_is_refused(make_user):
    with pytest.raises(ServiceError) as error:
        invitation_accept(token="not-a-real-token", user=make_user("x@example.com"))
    assert error.value.code == "invalid_invitation"


@pytest.mark.parametrize(
    ("inviter_role", "invited_role", "allowed"),
    [
        (Role.OWNER, Role.ADMIN, True),
        (Role.ADMIN, Role.ADMIN, True),
        (Role.ADMIN, Role.FINANCE, True),
        (Role.ADMIN, Role.OWNER, False),
        (Role.OWNER, Role.OWNER, False),  # ownership moves only by transfer
        (Role.DEVELOPER, Role.VIEWER, False),  # developers do not manage members
        (Role.FINANCE, Role.VIEWER, False),
        (Role.VIEWER, Role.VIEWER, False),
    ],
)
def test_nobody_invites_above_their_own_role(team_a, owner_a, member_of, inviter_role, invited_role, allowed):
    inviter = owner_a if inviter_role == Role.OWNER else member_of(inviter_role)
    actor = Membership.objects.get(team=team_a, user=inviter)
    if allowed:
        invitation, _ = invitation_create(team=team_a, email="n@example.com", role=invited_role, invited_by=actor)
        assert invitation.role == invited_role
    else:
        with pytest.raises(ServiceError) as error:
            invitation_create(team=team_a, email="n@example.com", role=invited_role, invited_by=actor)
        assert error.value.code == "role_above_own"
        assert not Invitation.objects.exists()


def test_resend_at_most_once_a_minute_and_it_replaces_the_link(team_a, owner_membership, make_user):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        _, first = invitation_create(team=team_a, email="r@example.com", role=Role.VIEWER, invited_by=owner_membership)
    invitation = Invitation.objects.get()
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        with pytest.raises(ServiceError) as error:
            invitation_resend(invitation=invitation, actor=owner_membership)
        assert error.value.code == "resend_too_soon"
        assert error.value.status == 429
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        second = invitation_resend(invitation=invitation, actor=owner_membership)
    assert second != first
    assert _token_from_last_email() == second
    user = make_user("r@example.com")
    with pytest.raises(ServiceError):
        invitation_accept(token=first, user=user)  # the old link no longer works
    assert invitation_accept(token=second, user=user).role == Role.VIEWER


def test_a_second_invitation_for_the_same_address_is_refused(team_a, owner_membership):
    invitation_create(team=team_a, email="twice@example.com", role=Role.VIEWER, invited_by=owner_membership)
    with pytest.raises(ServiceError) as error:
        invitation_create(team=team_a, email="TWICE@example.com", role=Role.ADMIN, invited_by=owner_membership)
    assert error.value.code == "already_invited"
    assert Invitation.objects.count() == 1


def test_inviting_a_member_is_refused(team_a, owner_membership, teammate_a):
    with pytest.raises(ServiceError) as error:
        invitation_create(team=team_a, email=teammate_a.email, role=Role.VIEWER, invited_by=owner_membership)
    assert error.value.code == "already_member"


def test_an_expired_invitation_can_be_replaced_by_a_new_one(team_a, owner_membership):
    invitation_create(team=team_a, email="again@example.com", role=Role.VIEWER, invited_by=owner_membership)
    with time_machine.travel(timezone.now() + timedelta(days=8)):
        invitation, _ = invitation_create(
            team=team_a, email="again@example.com", role=Role.ADMIN, invited_by=owner_membership
        )
    assert invitation.role == Role.ADMIN
    assert Invitation.objects.filter(revoked_at__isnull=False).count() == 1


# --- the link, in the browser's flow ---------------------------------------------------------


def test_new_user_signs_up_through_the_link_and_lands_in_the_team(client, team_a, owner_membership):
    _, token = invitation_create(
        team=team_a, email="newbie@example.com", role=Role.FINANCE, invited_by=owner_membership
    )
    page = client.get(f"/invitations/{token}/")
    assert page.status_code == 200
    assert b"Sign up to accept" in page.content
    response = client.post(
        "/accounts/signup/",
        {
            "name": "New Bie",
            "email": "newbie@example.com",
            "password1": "a-long-pass-phrase-1",
            "password2": "a-long-pass-phrase-1",
        },
    )
    assert response.status_code == 302
    assert response.url == f"/t/{team_a.slug}/"
    user = User.objects.get(email="newbie@example.com")
    assert Membership.objects.get(user=user).team == team_a  # no personal team: their first team is the one they joined
    assert Membership.objects.get(user=user).role == Role.FINANCE
    assert user.emailaddress_set.get().verified
    assert Invitation.objects.get().status == Invitation.Status.ACCEPTED


def test_existing_user_accepts_after_signing_in(client_for, team_a, owner_membership, make_user):
    invitee = make_user("existing@example.com")
    _, token = invitation_create(
        team=team_a, email="existing@example.com", role=Role.DEVELOPER, invited_by=owner_membership
    )
    client = client_for(invitee)
    assert b"Accept and join Team A" in client.get(f"/invitations/{token}/").content
    response = client.post(f"/invitations/{token}/accept")
    assert response.url == f"/t/{team_a.slug}/"
    assert Membership.objects.get(team=team_a, user=invitee).role == Role.DEVELOPER


def test_signed_in_as_someone_else_is_told_whom_the_invitation_is_for(client_for, team_a, owner_membership, outsider_b):
    _, token = invitation_create(
        team=team_a, email="someone@example.com", role=Role.VIEWER, invited_by=owner_membership
    )
    client = client_for(outsider_b)
    assert b"this invitation is for someone@example.com" in client.get(f"/invitations/{token}/").content
    client.post(f"/invitations/{token}/accept")
    assert not Membership.objects.filter(team=team_a, user=outsider_b).exists()


def test_used_and_unknown_links_explain_themselves(client, team_a, owner_membership, make_user):
    _, token = invitation_create(team=team_a, email="u@example.com", role=Role.VIEWER, invited_by=owner_membership)
    invitation_accept(token=token, user=make_user("u@example.com"))
    used = client.get(f"/invitations/{token}/")
    assert used.status_code == 410
    assert b"already been used" in used.content
    unknown = client.get("/invitations/nonsense/")
    assert unknown.status_code == 404
    assert b"not valid" in unknown.content
