-- The DjangoBnB chat schema exactly as Django 5.2 creates it in SQLite
-- (useraccount 0001_initial, chat 0001_initial), so that consumer-host can
-- serve a database the Django app made and the Django app can read what
-- consumer-host writes. Every statement is IF NOT EXISTS: on a database
-- Django already migrated this changes nothing.
--
-- UUID keys are char(32): 32 lowercase hex digits, no hyphens. Datetimes are
-- text, 'YYYY-MM-DD HH:MM:SS.ffffff', UTC.
CREATE TABLE IF NOT EXISTS "useraccount_user" ("password" varchar(128) NOT NULL, "last_login" datetime NULL, "is_superuser" bool NOT NULL, "id" char(32) NOT NULL PRIMARY KEY, "email" varchar(254) NOT NULL UNIQUE, "name" varchar(255) NULL, "is_active" bool NOT NULL, "is_staff" bool NOT NULL, "date_joined" datetime NOT NULL);
CREATE TABLE IF NOT EXISTS "chat_conversation" ("id" char(32) NOT NULL PRIMARY KEY, "created_at" datetime NOT NULL, "modified_at" datetime NOT NULL);
CREATE TABLE IF NOT EXISTS "chat_conversation_users" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, "conversation_id" char(32) NOT NULL REFERENCES "chat_conversation" ("id") DEFERRABLE INITIALLY DEFERRED, "user_id" char(32) NOT NULL REFERENCES "useraccount_user" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE UNIQUE INDEX IF NOT EXISTS "chat_conversation_users_conversation_id_user_id_83095ff4_uniq" ON "chat_conversation_users" ("conversation_id", "user_id");
CREATE INDEX IF NOT EXISTS "chat_conversation_users_conversation_id_4c0fbe59" ON "chat_conversation_users" ("conversation_id");
CREATE INDEX IF NOT EXISTS "chat_conversation_users_user_id_37f0921c" ON "chat_conversation_users" ("user_id");
CREATE TABLE IF NOT EXISTS "chat_conversationmessage" ("id" char(32) NOT NULL PRIMARY KEY, "body" text NOT NULL, "created_at" datetime NOT NULL, "conversation_id" char(32) NOT NULL REFERENCES "chat_conversation" ("id") DEFERRABLE INITIALLY DEFERRED, "created_by_id" char(32) NOT NULL REFERENCES "useraccount_user" ("id") DEFERRABLE INITIALLY DEFERRED, "sent_to_id" char(32) NOT NULL REFERENCES "useraccount_user" ("id") DEFERRABLE INITIALLY DEFERRED);
CREATE INDEX IF NOT EXISTS "chat_conversationmessage_conversation_id_cf6c6293" ON "chat_conversationmessage" ("conversation_id");
CREATE INDEX IF NOT EXISTS "chat_conversationmessage_created_by_id_312d8431" ON "chat_conversationmessage" ("created_by_id");
CREATE INDEX IF NOT EXISTS "chat_conversationmessage_sent_to_id_6a38f604" ON "chat_conversationmessage" ("sent_to_id");
