from __future__ import annotations

from allauth.account.models import EmailAddress
from django.db import transaction

from accounts.models import User


@transaction.atomic
def user_create(*, email: str, password: str | None, name: str = "", email_verified: bool = False) -> User:
    """Create a user and their primary email address record (verified or not)."""
    user = User.objects.create_user(email=email, password=password, name=name)
    EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=email_verified)
    return user
