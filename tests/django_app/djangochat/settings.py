"""Settings of the chat test app: the reference DjangoBnB chat's models on
SQLite or PostgreSQL, chosen by the environment.

CHAT_DB_URL    a SQLite file (``/tmp/x.sqlite3``, or ``sqlite:////tmp/x.sqlite3``)
               or ``postgres://user:password@host:port/dbname``
               (``postgresql://`` too); default ``db.sqlite3`` beside manage.py.
SECRET_KEY     Django's secret key; default ``reference-secret``, the
               reference app's (see tests/fixtures/simplejwt_tokens.md).
JWT_SECRET     simplejwt's SIGNING_KEY; default SECRET_KEY, as in simplejwt.
CHAT_MIGRATIONS  ``two_step``: chat's migrations as chat/migrations_two_step
               (0001 Conversation, 0002 ConversationMessage), the layout whose
               SQLite schema lists its objects in the reference dump's order;
               default: chat/migrations (one 0001_initial).
"""
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent


def database_from_url(url):
    """One DATABASES entry from CHAT_DB_URL."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        options = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            # ?host=/var/run/postgresql selects a Unix socket folder.
            "HOST": options.pop("host", None) or parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
        }
    if parts.scheme == "sqlite":
        # sqlite:////absolute/path or sqlite:///relative/path (dj-database-url's
        # convention); a plain path is simpler.
        url = url[len("sqlite:///"):]
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": url}


SECRET_KEY = os.environ.get("SECRET_KEY", "reference-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "rest_framework_simplejwt",
    "useraccount",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "djangochat.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(
        os.environ.get("CHAT_DB_URL", str(BASE_DIR / "db.sqlite3"))
    )
}

AUTH_USER_MODEL = "useraccount.User"

if os.environ.get("CHAT_MIGRATIONS", "") == "two_step":
    MIGRATION_MODULES = {"chat": "chat.migrations_two_step"}
elif os.environ.get("CHAT_MIGRATIONS", ""):
    raise ValueError("CHAT_MIGRATIONS must be two_step or empty")

# As `startproject` writes it since Django 3.2. It also decides the type of the
# auto-created m2m table's id (chat_conversation_users.id): bigint identity on
# PostgreSQL with BigAutoField, integer identity with AutoField; on SQLite
# both are "integer ... AUTOINCREMENT".
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": (
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ),
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=60),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "SIGNING_KEY": os.environ.get("JWT_SECRET", SECRET_KEY),
    "ALGORITHM": "HS256",
}
