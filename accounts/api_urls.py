from django.urls import path

from accounts import api

team = "teams/<slug:team_slug>/"

urlpatterns = [
    path("teams/", api.TeamListAPI.as_view(), name="api_team_list"),
    path(team, api.TeamDetailAPI.as_view(), name="api_team_detail"),
    path(team + "members/", api.MemberListAPI.as_view(), name="api_member_list"),
    path(team + "members/<int:membership_id>/", api.MemberDetailAPI.as_view(), name="api_member_detail"),
    path(team + "invitations/", api.InvitationListAPI.as_view(), name="api_invitation_list"),
    path(team + "invitations/<int:invitation_id>/", api.InvitationDetailAPI.as_view(), name="api_invitation_detail"),
    path(
        team + "invitations/<int:invitation_id>/resend/",
        api.InvitationResendAPI.as_view(),
        name="api_invitation_resend",
    ),
]
