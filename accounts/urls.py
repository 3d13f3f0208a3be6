from django.urls import path

from accounts import views

team = "t/<slug:team_slug>/"

urlpatterns = [
    path("", views.home, name="home"),
    path("teams/new/", views.team_create, name="team_create"),
    path(team + "settings/", views.team_settings, name="team_settings"),
    path(team + "settings/name", views.team_rename, name="team_rename"),
    path(team + "settings/security", views.team_security, name="team_security"),
    path(team + "settings/transfer", views.team_transfer, name="team_transfer"),
    path(team + "leave", views.team_leave, name="team_leave"),
    path(team + "2fa-required/", views.team_mfa_required, name="team_mfa_required"),
    path(team + "members/", views.members, name="members"),
    path(team + "members/<int:membership_id>/role", views.member_role, name="member_role"),
    path(team + "members/<int:membership_id>/remove", views.member_remove, name="member_remove"),
    path(team + "invitations/<int:invitation_id>/resend", views.invitation_resend, name="invitation_resend"),
    path(team + "invitations/<int:invitation_id>/revoke", views.invitation_revoke, name="invitation_revoke"),
    path(team + "audit/", views.audit_log, name="audit_log"),
    path(team + "audit.csv", views.audit_log_csv, name="audit_log_csv"),
    path(team + "tokens/", views.tokens, name="tokens"),
    path(team + "tokens/<int:token_id>/revoke", views.token_revoke, name="token_revoke"),
    path("invitations/<str:token>/", views.invitation_detail, name="invitation_detail"),
    path("invitations/<str:token>/accept", views.invitation_accept, name="invitation_accept"),
    path("account/security/", views.security_log, name="security_log"),
    path("account/time-zone", views.time_zone_save, name="time_zone_save"),
]
