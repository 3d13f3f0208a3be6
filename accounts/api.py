"""Team REST API: the team, its members, its invitations. Management tokens or a browser session."""

from __future__ import annotations

from typing import cast

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.authentication import TokenPrincipal
from accounts.models import Invitation, Membership, Role, User
from accounts.permissions import GRANTABLE_ROLE_CHOICES, TeamPermission, acting_token_membership
from accounts.requests import TeamAPIRequest
from project.api import ErrorSerializer, get_object_or_404_api


class TeamAPIView(APIView):
    permission_classes = [TeamPermission]
    required_actions: dict[str, str] = {}


class TeamOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    require_mfa = serializers.BooleanField()
    created_at = serializers.DateTimeField()


@extend_schema(tags=["teams"])
class TeamListAPI(APIView):
    """Teams the caller can reach: a session user's memberships, or a token's own team."""

    class Output(TeamOutput):
        role = serializers.CharField()

    @extend_schema(responses=Output(many=True), summary="List your teams")
    def get(self, request: Request) -> Response:
        if isinstance(request.user, TokenPrincipal):
            team = request.user.team
            rows = [{**TeamOutput(team).data, "role": acting_token_membership(request.user.token).role.value}]
        else:
            user = cast(User, request.user)  # IsAuthenticated, and not a token: a signed-in person
            rows = [{**TeamOutput(m.team).data, "role": m.role} for m in selectors.team_list_for_user(user=user)]
        return Response(rows)


@extend_schema(tags=["teams"])
class TeamDetailAPI(TeamAPIView):
    required_actions = {"GET": "team.view", "PATCH": "team.update"}

    class TeamRenameInput(serializers.Serializer):
        name = serializers.CharField(max_length=80)

    @extend_schema(responses=TeamOutput, summary="Get the team")
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        return Response(TeamOutput(request.team).data)

    @extend_schema(
        request=TeamRenameInput, responses={200: TeamOutput, 400: ErrorSerializer}, summary="Rename the team"
    )
    def patch(self, request: TeamAPIRequest, team_slug: str) -> Response:
        data = self.TeamRenameInput(data=request.data)
        data.is_valid(raise_exception=True)
        team = services.team_rename(team=request.team, name=data.validated_data["name"], actor=request.membership.user)
        return Response(TeamOutput(team).data)


class MemberOutput(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField(source="user.email")
    name = serializers.CharField(source="user.name")
    role = serializers.ChoiceField(choices=Role.choices)
    joined_at = serializers.DateTimeField(source="created_at")


@extend_schema(tags=["members"])
class MemberListAPI(TeamAPIView):
    required_actions = {"GET": "members.view"}

    @extend_schema(responses=MemberOutput(many=True), summary="List members")
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        return Response(MemberOutput(selectors.member_list(team=request.team), many=True).data)


@extend_schema(tags=["members"])
class MemberDetailAPI(TeamAPIView):
    required_actions = {"GET": "members.view", "PATCH": "members.manage", "DELETE": "members.manage"}

    class MemberRoleInput(serializers.Serializer):
        role = serializers.ChoiceField(choices=GRANTABLE_ROLE_CHOICES)

    def _member(self, request: TeamAPIRequest, membership_id: int) -> Membership:
        return get_object_or_404_api(lambda: selectors.member_get(team=request.team, membership_id=membership_id))

    @extend_schema(responses=MemberOutput, summary="Get a member")
    def get(self, request: TeamAPIRequest, team_slug: str, membership_id: int) -> Response:
        return Response(MemberOutput(self._member(request, membership_id)).data)

    @extend_schema(
        request=MemberRoleInput, responses={200: MemberOutput, 403: ErrorSerializer}, summary="Change a member's role"
    )
    def patch(self, request: TeamAPIRequest, team_slug: str, membership_id: int) -> Response:
        member = self._member(request, membership_id)
        data = self.MemberRoleInput(data=request.data)
        data.is_valid(raise_exception=True)
        member = services.member_change_role(
            membership=member, role=data.validated_data["role"], actor=request.membership
        )
        return Response(MemberOutput(member).data)

    @extend_schema(responses={204: None, 403: ErrorSerializer}, summary="Remove a member")
    def delete(self, request: TeamAPIRequest, team_slug: str, membership_id: int) -> Response:
        services.member_remove(membership=self._member(request, membership_id), actor=request.membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)
    status = serializers.CharField()
    invited_by = serializers.EmailField(source="invited_by.email", allow_null=True, default=None)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


@extend_schema(tags=["invitations"])
class InvitationListAPI(TeamAPIView):
    required_actions = {"GET": "members.view", "POST": "members.manage"}

    class InvitationCreateInput(serializers.Serializer):
        email = serializers.EmailField()
        role = serializers.ChoiceField(choices=GRANTABLE_ROLE_CHOICES)

    @extend_schema(responses=InvitationOutput(many=True), summary="List open invitations")
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        return Response(InvitationOutput(selectors.invitation_list_open(team=request.team), many=True).data)

    @extend_schema(
        request=InvitationCreateInput,
        responses={201: InvitationOutput, 403: ErrorSerializer, 409: ErrorSerializer},
        summary="Invite someone by email",
        description="Emails a single-use link valid for 7 days. The link's token is never returned by the API.",
    )
    def post(self, request: TeamAPIRequest, team_slug: str) -> Response:
        data = self.InvitationCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        invitation, _token = services.invitation_create(
            team=request.team,
            email=data.validated_data["email"],
            role=data.validated_data["role"],
            invited_by=request.membership,
        )
        return Response(InvitationOutput(invitation).data, status=status.HTTP_201_CREATED)


def _invitation(request: TeamAPIRequest, invitation_id: int) -> Invitation:
    return get_object_or_404_api(lambda: selectors.invitation_get(team=request.team, invitation_id=invitation_id))


@extend_schema(tags=["invitations"])
class InvitationDetailAPI(TeamAPIView):
    required_actions = {"GET": "members.view", "DELETE": "members.manage"}

    @extend_schema(responses=InvitationOutput, summary="Get an invitation")
    def get(self, request: TeamAPIRequest, team_slug: str, invitation_id: int) -> Response:
        return Response(InvitationOutput(_invitation(request, invitation_id)).data)

    @extend_schema(responses={204: None, 409: ErrorSerializer}, summary="Revoke an invitation")
    def delete(self, request: TeamAPIRequest, team_slug: str, invitation_id: int) -> Response:
        invitation = _invitation(request, invitation_id)
        services.invitation_revoke(invitation=invitation, actor=request.membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["invitations"])
class InvitationResendAPI(TeamAPIView):
    required_actions = {"POST": "members.manage"}

    @extend_schema(
        request=None,
        responses={
            200: InvitationOutput,
            429: OpenApiResponse(ErrorSerializer, description="Resent under a minute ago"),
        },
        summary="Resend an invitation with a new link",
    )
    def post(self, request: TeamAPIRequest, team_slug: str, invitation_id: int) -> Response:
        invitation = _invitation(request, invitation_id)
        services.invitation_resend(invitation=invitation, actor=request.membership)
        invitation.refresh_from_db()
        return Response(InvitationOutput(invitation).data)
