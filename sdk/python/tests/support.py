"""Shared by the tests: import paths, the DjangoBnB schema, the chat's fixtures.

Run the tests from sdk/python with ``python -m unittest discover -s tests``
(or ``python -m pytest tests``); the component tests need the build venv
(componentize-py and wasmtime) and are skipped without it.
"""

import importlib.util
import os
import sys
import uuid

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT_EXAMPLE = os.path.join(SDK, "examples", "chat")
MIGRATION = os.path.join(SDK, "..", "..", "migrations", "0001_django_chat.sql")

for path in (SDK, CHAT_EXAMPLE):
    if path not in sys.path:
        sys.path.insert(0, path)

from consumer_host import User  # noqa: E402
from consumer_host.testing import Hub  # noqa: E402

ROOM = "22de0f4f-c84e-47be-889c-d61b856492bd"
ANN = User("0a2d5e4c8b7f4d1e9c3b6a5f4e3d2c1b", "Ann", "ann@example.org")
BOB = User("c189712e871d45de8f111a3b1de97c30", "Bob", "bob@example.org")
EVE = User("e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0", "Eve", "eve@example.org")

MINIMAL_SCHEMA = """
CREATE TABLE "useraccount_user" ("id" char(32) NOT NULL PRIMARY KEY, "email" varchar(254) NOT NULL UNIQUE,
  "name" varchar(255) NULL);
CREATE TABLE "chat_conversation" ("id" char(32) NOT NULL PRIMARY KEY, "created_at" datetime NOT NULL,
  "modified_at" datetime NOT NULL);
CREATE TABLE "chat_conversation_users" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
  "conversation_id" char(32) NOT NULL REFERENCES "chat_conversation" ("id") DEFERRABLE INITIALLY DEFERRED,
  "user_id" char(32) NOT NULL REFERENCES "useraccount_user" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE "chat_conversationmessage" ("id" char(32) NOT NULL PRIMARY KEY, "body" text NOT NULL,
  "created_at" datetime NOT NULL,
  "conversation_id" char(32) NOT NULL REFERENCES "chat_conversation" ("id") DEFERRABLE INITIALLY DEFERRED,
  "created_by_id" char(32) NOT NULL REFERENCES "useraccount_user" ("id") DEFERRABLE INITIALLY DEFERRED,
  "sent_to_id" char(32) NOT NULL REFERENCES "useraccount_user" ("id") DEFERRABLE INITIALLY DEFERRED);
"""


def load_module(name, path):
    """Imports the file ``path`` as module ``name`` (the projects all call
    their module ``consumers``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def chat_hub():
    """A hub with the DjangoBnB schema (the project's migration when it is
    there), the grants of the chat's configuration, foreign keys enforced,
    Ann and Bob members of ROOM, and Eve a user outside it."""
    hub = Hub(read=["chat_conversation_users"], write=["chat_conversationmessage"])
    db = hub.db
    db.execute("PRAGMA foreign_keys = ON")
    if os.path.exists(MIGRATION):
        with open(MIGRATION, encoding="utf-8") as f:
            db.executescript(f.read())
        for user in (ANN, BOB, EVE):
            db.execute(
                "INSERT INTO useraccount_user (password, is_superuser, id, email, name, is_active, is_staff, "
                "date_joined) VALUES ('', 0, ?, ?, ?, 1, 0, '2026-01-01 00:00:00.000000')",
                (user.id, user.email, user.name),
            )
    else:
        db.executescript(MINIMAL_SCHEMA)
        for user in (ANN, BOB, EVE):
            db.execute("INSERT INTO useraccount_user (id, email, name) VALUES (?, ?, ?)",
                       (user.id, user.email, user.name))
    room_hex = ROOM.replace("-", "")
    db.execute("INSERT INTO chat_conversation VALUES (?, '2026-01-01 00:00:00.000000', "
               "'2026-01-01 00:00:00.000000')", (room_hex,))
    for user in (ANN, BOB):
        db.execute("INSERT INTO chat_conversation_users (conversation_id, user_id) VALUES (?, ?)",
                   (room_hex, user.id))
    return hub


def chat_message(body, sent_to=BOB, name="Ann", conversation=ROOM):
    """The reference frontend's frame."""
    return {"event": "chat_message",
            "data": {"conversation_id": conversation, "sent_to_id": hyphenated(sent_to.id), "name": name,
                     "body": body}}


def hyphenated(hex_id):
    return str(uuid.UUID(hex_id))
