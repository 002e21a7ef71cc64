// The chat protocol's checks, against the fake host. chat.test.js runs them
// on the consumer class; the SDK's component test runs them on the built
// component, so both must behave the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebsocketCommunicator } from 'consumer-host-sdk/testing';
import { ALICE, BOB, CAROL, ROOM, ROOM_HEX, ROUTE, chatHost, chatMessage } from './fixtures.js';

/**
 * Registers the chat's tests for `consumer`: the ChatConsumer class, or a
 * built component (anything a WebsocketCommunicator takes).
 */
export function chatTests(consumer, label = 'chat') {
  function communicator(host, user, room = ROOM) {
    return new WebsocketCommunicator(consumer, `/ws/${room}/`, { host, user, route: ROUTE });
  }

  async function connected(host, user) {
    const comm = communicator(host, user);
    const result = await comm.connect();
    assert.equal(result.connected, true, `connect: ${JSON.stringify(result)} ${JSON.stringify(comm.logs)}`);
    return comm;
  }

  test(`${label}: a member connects and joins the room group`, async () => {
    const host = chatHost();
    const alice = await connected(host, ALICE);
    assert.deepEqual(alice.groups, [`chat_${ROOM}`]);
    assert.equal(await alice.receiveNothing(), true);
  });

  test(`${label}: anonymous users, non-members and bad rooms are refused with 4003`, async () => {
    const host = chatHost();
    for (const [user, room, why] of [
      [null, ROOM, 'anonymous connection'],
      [CAROL, ROOM, 'not a member of this conversation'],
      [ALICE, 'not-a-uuid', 'room_name is not a UUID'],
    ]) {
      const comm = communicator(host, user, room);
      assert.deepEqual(await comm.connect(), { connected: false, status: 403, closeCode: 4003 });
      assert.deepEqual(comm.groups, []);
      assert.ok(comm.logs.some((l) => l.message === `refused: ${why}`), JSON.stringify(comm.logs));
    }
  });

  test(`${label}: a message is saved and every member gets it, with the author named by the server`, async () => {
    const host = chatHost();
    const alice = await connected(host, ALICE);
    const bob = await connected(host, BOB);

    await alice.sendJsonTo(chatMessage('Hi Bob', { name: 'Mallory' }));

    const [row] = host.database.rows('chat_conversationmessage');
    assert.equal(row.body, 'Hi Bob');
    assert.equal(row.conversation_id, ROOM_HEX);
    assert.equal(row.created_by_id, ALICE.id);
    assert.equal(row.sent_to_id, BOB.id);
    const expected = {
      body: 'Hi Bob',
      name: 'Alice',
      id: `${row.id.slice(0, 8)}-${row.id.slice(8, 12)}-${row.id.slice(12, 16)}-${row.id.slice(16, 20)}-${row.id.slice(20)}`,
      created_at: row.created_at,
    };
    assert.match(row.created_at, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$/);
    assert.deepEqual(await alice.receiveJsonFrom(), expected);
    assert.deepEqual(await bob.receiveJsonFrom(), expected);
    assert.equal(await alice.receiveNothing(), true);
    assert.equal(await bob.receiveNothing(), true);
  });

  test(`${label}: malformed messages get an error frame and write nothing`, async () => {
    const host = chatHost();
    const alice = await connected(host, ALICE);
    const cases = [
      ['not json', 'invalid_json'],
      ['[]', 'invalid_json'],
      ['{"data":{}}', 'missing_field'],
      ['{"event":"typing","data":{}}', 'unknown_event'],
      ['{"event":"chat_message"}', 'missing_field'],
      ['{"event":"chat_message","data":[]}', 'invalid_field'],
      ['{"event":"chat_message","data":{"conversation_id":"x","sent_to_id":"y"}}', 'missing_field'],
      ['{"event":"chat_message","data":{"conversation_id":"x","sent_to_id":"y","body":7}}', 'invalid_field'],
      [JSON.stringify(chatMessage('hi', { conversation: '7992fb26-4fc4-40d8-bde8-a6c68ec40aad' })), 'invalid_field'],
      [JSON.stringify(chatMessage('hi', { to: 'nobody' })), 'invalid_field'],
      [JSON.stringify(chatMessage('hi', { to: CAROL.id })), 'not_a_member'],
    ];
    for (const [text, code] of cases) {
      await alice.sendTo(text);
      const frame = await alice.receiveJsonFrom();
      assert.equal(frame.type, 'error', text);
      assert.equal(frame.code, code, `${text}: ${frame.detail}`);
      assert.equal(typeof frame.detail, 'string');
    }
    await alice.sendTo(new Uint8Array([1, 2, 3]));
    assert.equal((await alice.receiveJsonFrom()).code, 'binary_frame');
    assert.deepEqual(host.database.rows('chat_conversationmessage'), []);
    assert.equal(alice.closed, false);
  });

  test(`${label}: the member list is kept in the connection state and looked up again for a newcomer`, async () => {
    const host = chatHost();
    const alice = await connected(host, ALICE);
    assert.deepEqual(alice.state, { members: [ALICE.id, BOB.id] });

    host.database.seed('chat_conversation_users', [{ conversation_id: ROOM, user_id: CAROL.id }]);
    await alice.sendJsonTo(chatMessage('welcome', { to: CAROL.id }));
    assert.equal((await alice.receiveJsonFrom()).body, 'welcome');
    assert.deepEqual(alice.state, { members: [ALICE.id, BOB.id, CAROL.id] });
  });

  test(`${label}: a refused insert answers not_saved and is logged`, async () => {
    // The consumer may read the members but not write messages.
    const host = chatHost({ write: [] });
    const alice = await connected(host, ALICE);
    await alice.sendJsonTo(chatMessage('hi'));
    assert.deepEqual(await alice.receiveJsonFrom(), { type: 'error', code: 'not_saved', detail: 'the message could not be saved' });
    assert.ok(alice.logs.some((l) => l.level === 'error' && l.message.includes('AccessDeniedError')), JSON.stringify(alice.logs));
    assert.deepEqual(host.database.rows('chat_conversationmessage'), []);
  });

  test(`${label}: after a member leaves, messages reach only those still there`, async () => {
    const host = chatHost();
    const alice = await connected(host, ALICE);
    const bob = await connected(host, BOB);
    await bob.disconnect(1001);
    assert.deepEqual(host.members(`chat_${ROOM}`).length, 1);
    await alice.sendJsonTo(chatMessage('anyone?'));
    assert.equal((await alice.receiveJsonFrom()).body, 'anyone?');
    assert.equal(await bob.receiveNothing(), true);
  });

  test(`${label}: a member removed from the conversation is closed at the host's re-check`, async () => {
    const host = chatHost();
    const alice = await connected(host, ALICE);
    const bob = await connected(host, BOB);
    await bob.hostEvent({ type: 'host.recheck' });
    assert.equal(bob.closed, false);
    host.database.remove('chat_conversation_users', (row) => row.user_id === BOB.id);
    await bob.hostEvent({ type: 'host.recheck' });
    assert.deepEqual(await bob.receiveOutput(), { type: 'websocket.close', code: 4003, reason: 'no longer a member of this conversation' });
    assert.equal(bob.closed, true);
    assert.deepEqual(host.members(`chat_${ROOM}`).length, 1);
    await alice.hostEvent();
    assert.equal(alice.closed, false);
  });

  test(`${label}: chat.message is pure and renders the event alone`, async () => {
    const host = chatHost();
    const alice = await connected(host, ALICE);
    const bob = await connected(host, BOB);
    const [member] = host.members(`chat_${ROOM}`);
    assert.deepEqual([...member.pureEvents], ['chat.message', 'chat_message']);
    // The reference consumer's event type renders the same way.
    host.deliver(`chat_${ROOM}`, JSON.stringify({ type: 'chat_message', body: 'from Django', name: 'Django' }), 'chat_message');
    assert.deepEqual(await alice.receiveJsonFrom(), { body: 'from Django', name: 'Django' });
    assert.deepEqual(await bob.receiveJsonFrom(), { body: 'from Django', name: 'Django' });
    // An incomplete event is ignored with a warning.
    host.deliver(`chat_${ROOM}`, JSON.stringify({ type: 'chat.message', body: 'no name' }), 'chat.message');
    assert.equal(await alice.receiveNothing(), true);
    assert.ok(alice.logs.some((l) => l.level === 'warn' && l.message.includes('malformed')), JSON.stringify(alice.logs));
  });
}
