// The chat's tables (as Django creates them) and two members of one room.
import { FakeDatabase, FakeHost } from 'consumer-host-sdk/testing';

export const ROOM = '22de0f4f-c84e-47be-889c-d61b856492bd';
export const ROOM_HEX = ROOM.replaceAll('-', '');
export const ALICE = { id: 'c189712e871d45de8f111a3b1de97c30', name: 'Alice', email: 'alice@example.com' };
export const BOB = { id: '5f0b9e3c2a7d4e19b6c80d1f2e3a4b5c', name: 'Bob', email: 'bob@example.com' };
export const CAROL = { id: '0d6c1f6e9b3a4c2d8e7f6a5b4c3d2e1f', name: 'Carol', email: 'carol@example.com' };
export const ROUTE = 'ws/<room_name>/';

/**
 * A FakeHost whose database has the chat's tables, Alice and Bob in ROOM,
 * Carol in none; the grants are those of the chat's configuration.
 */
export function chatHost({ read = ['chat_conversation_users'], write = ['chat_conversationmessage'] } = {}) {
  const db = new FakeDatabase({ read, write });
  db.createTable('useraccount_user', { id: 'char(32) NOT NULL PRIMARY KEY', name: 'varchar(255) NULL', email: 'varchar(254) NOT NULL' });
  db.createTable('chat_conversation', { id: 'char(32) NOT NULL PRIMARY KEY', created_at: 'datetime NOT NULL', modified_at: 'datetime NOT NULL' });
  db.createTable('chat_conversation_users', {
    id: 'integer NOT NULL PRIMARY KEY AUTOINCREMENT',
    conversation_id: 'char(32) NOT NULL REFERENCES "chat_conversation" ("id")',
    user_id: 'char(32) NOT NULL REFERENCES "useraccount_user" ("id")',
  });
  db.createTable('chat_conversationmessage', {
    id: 'char(32) NOT NULL PRIMARY KEY',
    body: 'text NOT NULL',
    created_at: 'datetime NOT NULL',
    conversation_id: 'char(32) NOT NULL REFERENCES "chat_conversation" ("id")',
    created_by_id: 'char(32) NOT NULL REFERENCES "useraccount_user" ("id")',
    sent_to_id: 'char(32) NOT NULL REFERENCES "useraccount_user" ("id")',
  });
  db.seed('useraccount_user', [ALICE, BOB, CAROL]);
  db.seed('chat_conversation', [{ id: ROOM }]);
  db.seed('chat_conversation_users', [
    { conversation_id: ROOM, user_id: ALICE.id },
    { conversation_id: ROOM, user_id: BOB.id },
  ]);
  return new FakeHost({ database: db });
}

/** The reference client's message. */
export function chatMessage(body, { to = BOB.id, conversation = ROOM, name = 'Whoever' } = {}) {
  return { event: 'chat_message', data: { conversation_id: conversation, sent_to_id: to, name, body } };
}
