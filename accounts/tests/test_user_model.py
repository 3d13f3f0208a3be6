import pytest
from django.db import IntegrityError

from accounts.models import User


@pytest.mark.django_db
def test_email_is_the_login_and_is_stored_lowercased():
    user = User.objects.create_user(email="Ada@Example.COM", password="pw-123456789")
    assert user.email == "ada@example.com"
    assert User.USERNAME_FIELD == "email"
    assert User.objects.get_by_natural_key("ADA@example.com") == user
    assert user.check_password("pw-123456789")


@pytest.mark.django_db
def test_emails_are_unique_regardless_of_case():
    User.objects.create_user(email="ada@example.com", password="x")
    with pytest.raises(IntegrityError):
        User.objects.create(email="ADA@EXAMPLE.COM")


@pytest.mark.django_db
def test_superuser_is_staff():
    admin = User.objects.create_superuser(email="root@example.com", password="x")
    assert admin.is_staff
    assert admin.is_superuser
