// Tests for {{name}}, without a server: `node --test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeHost, WebsocketCommunicator } from 'consumer-host-sdk/testing';
import { RoomConsumer } from './consumers.js';

function join(host, name, room = 'blue') {
  return new WebsocketCommunicator(RoomConsumer, `/ws/${room}/`, {
    host,
    route: 'ws/<room>/',
    user: { id: name.toLowerCase().padEnd(32, '0'), name, email: `${name}@example.com` },
  });
}

test('messages reach everyone in the room, and only them', async () => {
  const host = new FakeHost();
  const ann = join(host, 'Ann');
  const bob = join(host, 'Bob');
  const cy = join(host, 'Cy', 'green');
  for (const client of [ann, bob, cy]) assert.equal((await client.connect()).connected, true);

  await ann.sendJsonTo({ text: 'hello' });

  assert.deepEqual(await ann.receiveJsonFrom(), { text: 'hello', from: 'Ann' });
  assert.deepEqual(await bob.receiveJsonFrom(), { text: 'hello', from: 'Ann' });
  assert.equal(await cy.receiveNothing(), true);
});

test('a malformed message gets an error, and the connection stays open', async () => {
  const ann = join(new FakeHost(), 'Ann');
  await ann.connect();
  for (const bad of ['not json', '{"text": 7}']) {
    await ann.sendTo(bad);
    assert.equal((await ann.receiveJsonFrom()).type, 'error');
  }
  assert.equal(ann.closed, false);
});

test('a bad room name is refused', async () => {
  const comm = join(new FakeHost(), 'Ann', 'no%20spaces');
  assert.deepEqual(await comm.connect(), { connected: false, status: 403, closeCode: 4000 });
});
