"""The reference app's user: a UUID key, the email as the login, a name.

The reference table (tests/fixtures/django_chat.sql) has exactly
password, last_login            from AbstractBaseUser,
is_superuser                    declared first here so that it comes third,
id, email, name, is_active, is_staff, date_joined.
It has no useraccount_user_groups / useraccount_user_user_permissions tables,
so the model is not a PermissionsMixin (that mixin adds is_superuser in the
same place but also the two m2m tables). has_perm / has_module_perms keep the
admin working: a superuser may do everything, others nothing.
"""
import uuid

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager
from django.db import models
from django.utils import timezone


class CustomUserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, name=None, **extra_fields):
        if not email:
            raise ValueError("an email address is required")
        email = self.normalize_email(email)
        user = self.model(email=email, name=name, **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email=None, password=None, name=None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, name, **extra_fields)

    def create_superuser(self, email=None, password=None, name=None, **extra_fields):
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        return self._create_user(email, password, name, **extra_fields)


class User(AbstractBaseUser):
    is_superuser = models.BooleanField(default=False)
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=255, blank=True, null=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = CustomUserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []

    def __str__(self):
        return self.email

    def has_perm(self, perm, obj=None):
        return self.is_active and self.is_superuser

    def has_perms(self, perm_list, obj=None):
        return all(self.has_perm(perm, obj) for perm in perm_list)

    def has_module_perms(self, app_label):
        return self.is_active and self.is_superuser
