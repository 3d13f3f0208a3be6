"""Property: whatever members do to each other, a team has exactly one owner and nobody holds a role
above what they were granted. Random sequences of invitations, role changes, removals, leaves and
transfers run through the real services and database; a plain-Python model says what must be true."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from accounts.models import Membership, Role
from accounts.permissions import ROLE_RANK, can_grant
from accounts.services import (
    invitation_accept,
    invitation_create,
    member_change_role,
    member_leave,
    member_remove,
    ownership_transfer,
    team_create,
    user_create,
)
from project.errors import ServiceError

ROLES = list(Role)
_counter = itertools.count()


class MembershipMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        n = next(_counter)
        # Verified addresses: only verified members may invite (the invitation rule has its own tests).
        self.users = [user_create(email=f"m{n}-{i}@example.com", password=None, email_verified=True) for i in range(5)]
        self.team = team_create(name=f"Machine {n}", owner=self.users[0])
        self.model: dict[int, Role] = {self.users[0].pk: Role.OWNER}  # user id → role, as granted

    def _membership(self, user_index: int) -> Membership | None:
        return Membership.objects.filter(team=self.team, user=self.users[user_index]).select_related("user").first()

    @rule(actor=st.integers(0, 4), invitee=st.integers(0, 4), role=st.sampled_from(ROLES))
    def invite_and_accept(self, actor: int, invitee: int, role: Role) -> None:
        acting = self._membership(actor)
        target_user = self.users[invitee]
        if acting is None:
            return
        try:
            _, token = invitation_create(team=self.team, email=target_user.email, role=role, invited_by=acting)
        except ServiceError:
            assert not can_grant(acting.role, role) or target_user.pk in self.model
            return
        assert can_grant(acting.role, role), f"{acting.role} invited a {role}"
        invitation_accept(token=token, user=target_user)
        self.model[target_user.pk] = role

    @rule(actor=st.integers(0, 4), subject=st.integers(0, 4), role=st.sampled_from(ROLES))
    def change_role(self, actor: int, subject: int, role: Role) -> None:
        acting, member = self._membership(actor), self._membership(subject)
        if acting is None or member is None:
            return
        try:
            member_change_role(membership=member, role=role, actor=acting)
        except ServiceError:
            return
        assert can_grant(acting.role, role)
        assert member.role != Role.OWNER
        self.model[member.user_id] = role

    @rule(actor=st.integers(0, 4), subject=st.integers(0, 4))
    def remove(self, actor: int, subject: int) -> None:
        acting, member = self._membership(actor), self._membership(subject)
        if acting is None or member is None:
            return
        try:
            member_remove(membership=member, actor=acting)
        except ServiceError:
            return
        assert member.role != Role.OWNER
        assert ROLE_RANK[Role(member.role)] <= ROLE_RANK[Role(acting.role)]
        del self.model[member.user_id]

    @rule(member=st.integers(0, 4))
    def leave(self, member: int) -> None:
        membership = self._membership(member)
        if membership is None:
            return
        try:
            member_leave(membership=membership)
        except ServiceError:
            assert membership.role == Role.OWNER
            return
        del self.model[membership.user_id]

    @rule(actor=st.integers(0, 4), subject=st.integers(0, 4))
    def transfer(self, actor: int, subject: int) -> None:
        acting, member = self._membership(actor), self._membership(subject)
        if acting is None or member is None:
            return
        try:
            ownership_transfer(team=self.team, new_owner=member, actor=acting.user)
        except ServiceError:
            assert acting.role != Role.OWNER or member.pk == acting.pk
            return
        self.model[acting.user_id] = Role.ADMIN
        self.model[member.user_id] = Role.OWNER

    @invariant()
    def exactly_one_owner(self) -> None:
        assert Membership.objects.filter(team=self.team, role=Role.OWNER).count() == 1

    @invariant()
    def roles_are_exactly_what_was_granted(self) -> None:
        actual = dict(Membership.objects.filter(team=self.team).values_list("user_id", "role"))
        assert actual == {user_id: role.value for user_id, role in self.model.items()}


@pytest.mark.django_db(transaction=True)
def test_membership_changes_keep_one_owner_and_no_escalation():
    run_state_machine_as_test(
        MembershipMachine,
        settings=settings(
            max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
