// The DjangoBnB chat consumer in JavaScript: the same protocol as the Rust
// chat in guest-consumers/chat.
//
// - connect: the room is the conversation named by the `room_name` url kwarg
//   (a UUID, hyphenated or as 32 hex digits). Anonymous users, rooms that
//   are not UUIDs and users who are not members are refused with 4003 before
//   accept (HTTP 403). Members join the group `chat_<room uuid, hyphenated>`.
// - receive: `{"event": "chat_message", "data": {conversation_id,
//   sent_to_id, name, body}}` saves a chat_conversationmessage row (author:
//   the authenticated user) and sends a `chat.message` event to the room.
//   The name shown is the author's name from the scope, not the one the
//   client claims. Anything malformed is answered with
//   `{"type": "error", "code", "detail"}` and nothing is written.
// - chat.message: sends `{"body", "name", "id", "created_at"}`. It reads
//   only the event, so it is declared pure: the host renders it once per
//   message for every member.
// - host.recheck (the host checked the login again on a long-lived
//   connection): the user must still be a member, else the connection is
//   closed with 4003.
//
// The member list is cached in `this.members`: the SDK keeps it in the
// host's connection state between events, so a message costs no
// membership query unless it names someone new.

import { WebsocketConsumer } from 'consumer-host-sdk';

const ROOM_KWARG = 'room_name';
const CHAT_MESSAGE = 'chat.message';
const MEMBERS_SQL = 'SELECT user_id FROM chat_conversation_users WHERE conversation_id = ?1';

/** A problem with a client's message, answered with an error frame. */
class Rejected extends Error {
  constructor(code, detail) {
    super(detail);
    this.code = code;
  }
}

export class ChatConsumer extends WebsocketConsumer {
  // "chat_message" too: the reference consumer sends that type, and both
  // spellings name the same handler.
  static pureEvents = [CHAT_MESSAGE, 'chat_message'];

  connect() {
    const { user } = this.scope;
    if (!user.isAuthenticated) return this.#refuse('anonymous connection');
    const room = roomOf(this.scope);
    if (!room) return this.#refuse('room_name is not a UUID');
    // A failing lookup throws: the SDK logs it and the handshake fails (HTTP 500).
    this.members = conversationMembers(this.db, room);
    if (!this.members.includes(user.id)) return this.#refuse('not a member of this conversation');
    this.groupAdd(groupOf(room));
    this.accept();
  }

  receive({ text }) {
    try {
      this.#post(text);
    } catch (err) {
      if (!(err instanceof Rejected)) throw err;
      this.send(JSON.stringify({ type: 'error', code: err.code, detail: err.message }));
    }
  }

  #post(text) {
    if (text === undefined) throw new Rejected('binary_frame', 'binary frames are not supported; send JSON text');
    const { user } = this.scope;
    if (!user.isAuthenticated) throw new Rejected('forbidden', 'not logged in');
    const room = roomOf(this.scope);
    if (!room) throw new Rejected('forbidden', 'room_name is not a UUID');

    const chat = parseChatMessage(text);
    if (toHex(chat.conversation_id) !== room) {
      throw new Rejected('invalid_field', "data.conversation_id does not name this room's conversation");
    }
    const sentTo = toHex(chat.sent_to_id);
    if (!sentTo) throw new Rejected('invalid_field', 'data.sent_to_id is not a UUID');
    if (!this.#isMember(room, sentTo)) {
      throw new Rejected('not_a_member', 'data.sent_to_id is not a member of this conversation');
    }

    let row;
    try {
      row = this.db.insert('chat_conversationmessage', {
        conversation_id: room,
        created_by_id: user.id,
        sent_to_id: sentTo,
        body: chat.body,
      });
    } catch (err) {
      console.error(`saving a message failed: ${err}`);
      throw new Rejected('not_saved', 'the message could not be saved');
    }

    try {
      this.groupSend(groupOf(room), {
        type: CHAT_MESSAGE,
        body: chat.body,
        name: user.name ?? '',
        id: typeof row.id === 'string' ? hyphenate(row.id) : undefined,
        created_at: row.created_at ?? undefined,
      });
    } catch (err) {
      console.error(`group-send failed: ${err}`);
      throw new Rejected('not_delivered', 'the message was saved but not delivered');
    }
  }

  chat_message(event) {
    if (typeof event.body !== 'string' || typeof event.name !== 'string') {
      console.warn('ignored a malformed event: a chat message needs body and name');
      return;
    }
    const frame = { body: event.body, name: event.name };
    if (event.id !== undefined) frame.id = event.id;
    if (event.created_at !== undefined) frame.created_at = event.created_at;
    this.send(JSON.stringify(frame));
  }

  // The host's periodic re-check: membership may have been revoked since connect.
  host_recheck() {
    const { user } = this.scope;
    const room = roomOf(this.scope);
    if (!user.isAuthenticated || !room) return;
    try {
      this.members = conversationMembers(this.db, room);
    } catch (err) {
      // Keep the connection: a failed check is not a revoked membership.
      console.error(`membership re-check failed: ${err}`);
      return;
    }
    if (!this.members.includes(user.id)) this.#refuse('no longer a member of this conversation');
  }

  disconnect() {
    const room = roomOf(this.scope);
    // The host leaves every group on disconnect anyway; leaving here keeps
    // the consumer correct on hosts that do not.
    if (room) this.groupDiscard(groupOf(room));
  }

  // Helpers are private (#): every public method is a possible target of
  // a group event's `type`.

  #refuse(why) {
    console.info(`refused: ${why}`);
    this.close(4003, why);
  }

  // Members may have been added since connect: look again before refusing.
  #isMember(room, userId) {
    if (this.members?.includes(userId)) return true;
    try {
      this.members = conversationMembers(this.db, room);
    } catch (err) {
      console.error(`membership lookup failed: ${err}`);
      throw new Rejected('not_saved', 'membership could not be checked');
    }
    return this.members.includes(userId);
  }
}

/** The room's conversation id as the database stores it (32 hex digits), or undefined. */
function roomOf(scope) {
  const value = scope.urlRoute.kwargs[ROOM_KWARG];
  return value === undefined ? undefined : toHex(value);
}

/** The room's group: `chat_` and the hyphenated UUID, as the reference names it. */
function groupOf(room) {
  return `chat_${hyphenate(room)}`;
}

function conversationMembers(db, room) {
  return db.query(MEMBERS_SQL, [room]).map((row) => row.user_id);
}

/**
 * Parses a client's text frame into the `data` of a chat_message, or throws
 * Rejected naming what is wrong.
 */
export function parseChatMessage(text) {
  let envelope;
  try {
    envelope = JSON.parse(text);
  } catch (err) {
    throw new Rejected('invalid_json', `not a JSON object: ${err.message}`);
  }
  if (envelope === null || typeof envelope !== 'object' || Array.isArray(envelope)) {
    throw new Rejected('invalid_json', 'not a JSON object');
  }
  const { event, data } = envelope;
  if (event === undefined || event === null) throw new Rejected('missing_field', 'missing "event"');
  if (typeof event !== 'string') throw new Rejected('invalid_json', '"event" must be a string');
  if (event !== 'chat_message') throw new Rejected('unknown_event', `unknown event ${JSON.stringify(event)}; expected "chat_message"`);
  if (data === undefined || data === null) throw new Rejected('missing_field', 'missing "data"');
  if (typeof data !== 'object' || Array.isArray(data)) throw new Rejected('invalid_field', '"data" must be an object');
  for (const field of ['conversation_id', 'sent_to_id', 'body']) {
    if (data[field] === undefined || data[field] === null) throw new Rejected('missing_field', `missing "data.${field}"`);
    if (typeof data[field] !== 'string') throw new Rejected('invalid_field', `bad "data": ${field} must be a string`);
  }
  return data;
}

/** A UUID in any usual spelling as 32 lowercase hex digits, or undefined. */
export function toHex(text) {
  if (typeof text !== 'string') return undefined;
  let body = text.toLowerCase();
  if (body.startsWith('urn:uuid:')) body = body.slice(9);
  else if (body.startsWith('{') && body.endsWith('}')) body = body.slice(1, -1);
  if (/^[0-9a-f]{32}$/.test(body)) return body;
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(body)) return body.replaceAll('-', '');
  return undefined;
}

/** 32 hex digits as the 8-4-4-4-12 form. */
export function hyphenate(hex) {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
