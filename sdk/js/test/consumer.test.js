// The consumer classes and the glue, through the test harness (which runs
// the same defineConsumer glue as the component).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AccessDeniedError,
  ConstraintError,
  DatabaseError,
  InvalidGroupNameError,
  JsonWebsocketConsumer,
  MessageTooLargeError,
  NoSuchTableError,
  WebsocketConsumer,
  defineConsumer,
  handlerName,
} from 'consumer-host-sdk';
import { FakeDatabase, FakeHost, WebsocketCommunicator } from 'consumer-host-sdk/testing';

const USER = { id: 'a'.repeat(32), name: 'Ann', email: 'ann@example.com' };

async function open(Consumer, options = {}) {
  const host = options.host ?? new FakeHost();
  const comm = new WebsocketCommunicator(Consumer, options.path ?? '/ws/x/', { host, user: USER, ...options });
  const result = await comm.connect();
  return { comm, host, result };
}

test('event types name handlers as in Channels: dots become underscores', () => {
  assert.equal(handlerName('chat.message'), 'chat_message');
  assert.equal(handlerName('chat_message'), 'chat_message');
  assert.equal(handlerName('user.joined.room'), 'user_joined_room');
  // Never a base-class method, a private-looking name, or a non-identifier.
  for (const type of ['close', 'send', 'accept', 'groupSend', 'connect', 'receive', 'constructor', 'toString', '_secret', '.x', 'a b', 7, undefined]) {
    assert.equal(handlerName(type), undefined, String(type));
  }
});

test('connect accepts by default, with the scope the host gave', async () => {
  let seen;
  class Echo extends WebsocketConsumer {
    connect() {
      seen = this.scope;
      this.accept('v2.chat');
    }
  }
  const { result, comm } = await open(Echo, {
    path: '/ws/room-7/',
    route: 'ws/<room>/',
    query: { page: '2', q: 'a b' },
    subprotocols: ['v1.chat', 'v2.chat'],
  });
  assert.deepEqual(result, { connected: true, subprotocol: 'v2.chat' });
  assert.equal(seen.path, '/ws/room-7/');
  assert.deepEqual(seen.urlRoute.kwargs, { room: 'room-7' });
  assert.equal(seen.queryString, 'page=2&q=a+b');
  assert.deepEqual(seen.subprotocols, ['v1.chat', 'v2.chat']);
  assert.deepEqual(seen.user, { id: USER.id, name: 'Ann', email: 'ann@example.com', isAuthenticated: true, isAnonymous: false });
  assert.equal(seen.connectionId, comm.channelName);
  assert.ok(Object.isFrozen(seen));

  class Plain extends WebsocketConsumer {}
  const anonymous = new WebsocketCommunicator(Plain, '/ws/', { host: new FakeHost() });
  assert.deepEqual(await anonymous.connect(), { connected: true, subprotocol: undefined });
});

test('the anonymous user is not authenticated', async () => {
  let user;
  class Who extends WebsocketConsumer {
    connect() {
      user = this.scope.user;
      this.close(4001, 'log in first');
    }
  }
  const comm = new WebsocketCommunicator(Who, '/ws/', { host: new FakeHost() });
  assert.deepEqual(await comm.connect(), { connected: false, status: 403, closeCode: 4001 });
  assert.equal(user.isAuthenticated, false);
  assert.equal(user.id, null);
});

test('a new consumer object per event; own properties survive in the state blob', async () => {
  let constructed = 0;
  class Counter extends JsonWebsocketConsumer {
    count = 0;
    constructor() {
      super();
      constructed += 1;
    }
    connect() {
      this.room = this.scope.urlRoute.kwargs.room;
      this.accept();
    }
    receiveJson(content) {
      this.count += content.add;
      this.sendJson({ room: this.room, count: this.count });
    }
  }
  const { comm } = await open(Counter, { path: '/ws/blue/', route: 'ws/<room>/' });
  await comm.sendJsonTo({ add: 2 });
  await comm.sendJsonTo({ add: 3 });
  assert.deepEqual(await comm.receiveJsonFrom(), { room: 'blue', count: 2 });
  assert.deepEqual(await comm.receiveJsonFrom(), { room: 'blue', count: 5 });
  assert.equal(constructed, 3);
  assert.deepEqual(comm.state, { count: 5, room: 'blue' });
});

test('the state is written only when the properties changed', async () => {
  class Quiet extends WebsocketConsumer {
    connect() {
      this.name = 'fixed';
      this.accept();
    }
    receive({ text }) {
      if (text === 'change') this.name = 'changed';
    }
  }
  const { comm } = await open(Quiet);
  const { connection } = comm;
  let writes = 0;
  const setState = connection.setState.bind(connection);
  connection.setState = (value) => {
    writes += 1;
    setState(value);
  };
  await comm.sendTo('same');
  await comm.sendTo('same');
  assert.equal(writes, 0);
  await comm.sendTo('change');
  assert.equal(writes, 1);
  assert.deepEqual(comm.state, { name: 'changed' });
});

test('a property JSON cannot carry is left out with a warning naming it', async () => {
  class Sloppy extends WebsocketConsumer {
    connect() {
      this.ok = [1, 'two', { three: null }];
      this.when = new Date(0);
      this.seen = new Set([1]);
      this.big = 10n;
      this.nested = { fine: 1, bad: [1, () => 2] };
      this.accept();
    }
  }
  const { comm } = await open(Sloppy);
  assert.deepEqual(comm.state, { ok: [1, 'two', { three: null }] });
  const warnings = comm.logs.filter((l) => l.level === 'warn').map((l) => l.message);
  for (const name of ['this.when is a Date', 'this.seen is a Set', 'this.big is a bigint', 'this.nested.bad[1] is a function']) {
    assert.ok(warnings.some((w) => w.includes(name)), `${name} in ${JSON.stringify(warnings)}`);
  }
});

test('a state blob that is not ours is ignored with a warning', async () => {
  class Reader extends WebsocketConsumer {
    receive() {
      this.send(JSON.stringify(Object.keys(this)));
    }
  }
  const { comm } = await open(Reader);
  comm.connection.state = new TextEncoder().encode('a,b,c');
  await comm.sendTo('x');
  assert.equal(await comm.receiveFrom(), '[]');
  assert.ok(comm.logs.some((l) => l.level === 'warn' && l.message.includes('not a JSON object')));
});

test('console.* goes to the host log during a handler, and is put back after', async () => {
  const original = console.log;
  class Chatty extends WebsocketConsumer {
    connect() {
      console.log('hello %s, %d times', 'world', 3, { a: 1 });
      console.debug('details');
      console.warn('careful');
      console.error(new TypeError('bad'));
      this.accept();
    }
  }
  const { comm } = await open(Chatty);
  assert.equal(console.log, original);
  const logs = comm.logs.map((l) => [l.level, l.message.split('\n')[0]]);
  assert.deepEqual(logs, [
    ['info', 'hello world, 3 times {"a":1}'],
    ['debug', 'details'],
    ['warn', 'careful'],
    ['error', 'TypeError: bad'],
  ]);
});

test('an exception is logged with its stack, and the connection closes with 1011 without disconnect', async () => {
  let disconnected = false;
  class Broken extends WebsocketConsumer {
    receive({ text }) {
      this.helper(text);
    }
    helper(text) {
      throw new RangeError(`cannot handle ${text}`, { cause: new Error('root cause') });
    }
    disconnect() {
      disconnected = true;
    }
  }
  const { comm } = await open(Broken);
  await comm.sendTo('this');
  assert.deepEqual(await comm.receiveOutput(), { type: 'websocket.close', code: 1011, reason: 'consumer error' });
  assert.equal(comm.closed, true);
  assert.equal(comm.error.message, 'cannot handle this');
  assert.equal(disconnected, false);
  const [entry] = comm.logs.filter((l) => l.level === 'error');
  assert.match(entry.message, /^Broken\.receive\(\) failed: RangeError: cannot handle this\n/);
  assert.match(entry.message, /helper/);
  assert.match(entry.message, /consumer\.test\.js:\d+/);
  assert.match(entry.message, /Caused by: Error: root cause/);
  await assert.rejects(comm.sendTo('more'), /connection is closed/);
});

test('an exception in connect fails the handshake (HTTP 500)', async () => {
  class BadConnect extends WebsocketConsumer {
    connect() {
      throw new Error('no');
    }
  }
  const { result } = await open(BadConnect);
  assert.deepEqual(result, { connected: false, status: 500 });
});

test('async handlers are awaited', async () => {
  class Slow extends WebsocketConsumer {
    async receive({ text }) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      this.send(`late ${text}`);
      this.last = text;
    }
  }
  const { comm } = await open(Slow);
  await comm.sendTo('a');
  assert.equal(await comm.receiveFrom(), 'late a');
  assert.deepEqual(comm.state, { last: 'a' });
});

test('group events dispatch by type; unknown types are logged and ignored', async () => {
  class Room extends WebsocketConsumer {
    static groups = ['lobby'];
    receive({ text }) {
      this.groupSend('lobby', { type: text, from: this.channelName });
    }
    user_joined(event) {
      this.send(`joined: ${event.from}`);
    }
  }
  const host = new FakeHost();
  const { comm: a } = await open(Room, { host });
  const { comm: b } = await open(Room, { host });
  assert.deepEqual(a.groups, ['lobby']);
  await a.sendTo('user.joined');
  assert.equal(await a.receiveFrom(), `joined: ${a.channelName}`);
  assert.equal(await b.receiveFrom(), `joined: ${a.channelName}`);
  await a.sendTo('close'); // a base-class method: never dispatched
  await a.sendTo('nobody.home');
  assert.equal(a.closed, false);
  assert.equal(await b.receiveNothing(), true);
  assert.ok(b.logs.some((l) => l.level === 'warn' && l.message.includes('no handler for event type "nobody.home"')));
  await b.disconnect();
  assert.deepEqual(host.members('lobby').length, 1);
});

test('a pure event handler may only send', async () => {
  class Pure extends WebsocketConsumer {
    static pureEvents = ['news'];
    static groups = ['g'];
    receive({ text }) {
      this.groupSend('g', { type: 'news', text });
    }
    news(event) {
      this.send(event.text);
      if (event.text === 'peek') this.send(this.scope.path);
    }
  }
  const handler = defineConsumer(Pure, { log() {} });
  assert.deepEqual(handler.describe(), { pureEvents: ['news'] });
  const host = new FakeHost();
  const { comm: a } = await open(Pure, { host });
  const { comm: b } = await open(Pure, { host });
  await a.sendTo('hi');
  assert.equal(await a.receiveFrom(), 'hi');
  assert.equal(await b.receiveFrom(), 'hi');
  await a.sendTo('peek');
  assert.equal((await b.receiveOutput()).code, 1011);
  assert.match(b.error.message, /"news" is listed in pureEvents, so its handler may only send; it used this.scope/);
});

test('send takes text or bytes, and refuses oversized messages and objects', async () => {
  class Sender extends WebsocketConsumer {
    receive({ text, bytes }) {
      if (bytes) return this.send(bytes.reverse());
      if (text === 'big') {
        try {
          this.send('x'.repeat(90 * 1024));
        } catch (err) {
          this.send(`${err.name} ${err.limit} ${err instanceof MessageTooLargeError}`);
        }
        return;
      }
      if (text === 'object') return this.send({ no: 'objects' });
    }
  }
  const { comm } = await open(Sender);
  await comm.sendTo(new Uint8Array([1, 2, 3]));
  assert.deepEqual(await comm.receiveFrom(), new Uint8Array([3, 2, 1]));
  await comm.sendTo('big');
  // What a client may send (64 KiB) plus the host's 16 KiB of headroom.
  assert.equal(await comm.receiveFrom(), 'MessageTooLargeError 81920 true');
  await comm.sendTo('object');
  assert.equal((await comm.receiveOutput()).code, 1011);
  assert.match(comm.error.message, /send\(\) takes a string or a Uint8Array/);
});

test('close ends the connection: close frame, then disconnect with the code', async () => {
  const seen = [];
  class Closer extends WebsocketConsumer {
    receive({ text }) {
      this.send('bye');
      this.close(4000, text);
    }
    disconnect(code) {
      // The socket is gone: send() says so instead of throwing.
      seen.push(code, this.send('too late'));
    }
  }
  const { comm } = await open(Closer);
  await comm.sendTo('done here');
  assert.equal(await comm.receiveFrom(), 'bye');
  assert.deepEqual(await comm.receiveOutput(), { type: 'websocket.close', code: 4000, reason: 'done here' });
  assert.deepEqual(seen, [4000, false]);
  assert.equal(comm.closed, true);
});

test('reserved close codes are refused before they reach the host', async () => {
  class Wrong extends WebsocketConsumer {
    receive() {
      this.close(1011);
    }
  }
  const { comm } = await open(Wrong);
  await comm.sendTo('x');
  assert.match(comm.error.message, /close code 1011 is reserved/);
});

test('the host traps rule breakers even when the consumer catches the error', async () => {
  class Sneaky extends WebsocketConsumer {
    connect() {
      try {
        this.accept('not-offered');
      } catch {
        // swallowed, but the host has already trapped the instance
      }
    }
  }
  const { result, comm } = await open(Sneaky, { subprotocols: ['v1'] });
  assert.deepEqual(result, { connected: false, status: 500 });
  assert.match(comm.error.message, /did not offer/);
});

test('JsonWebsocketConsumer decodes text, and fails on binary frames', async () => {
  class Json extends JsonWebsocketConsumer {
    receiveJson(content) {
      this.sendJson({ got: content });
    }
  }
  const { comm } = await open(Json);
  await comm.sendJsonTo({ a: [1] });
  assert.deepEqual(await comm.receiveJsonFrom(), { got: { a: [1] } });
  await comm.sendTo(new Uint8Array([1]));
  assert.equal((await comm.receiveOutput()).code, 1011);
  assert.match(comm.error.message, /got a binary frame/);
});

test("the host's own events: host.recheck reaches a handler that wants it, and is ignored otherwise", async () => {
  class Rechecker extends WebsocketConsumer {
    host_recheck() {
      this.send('rechecked');
    }
  }
  class Plain extends WebsocketConsumer {
    receive() {
      try {
        this.groupSend('g', { type: 'host.recheck' });
      } catch (err) {
        this.send(`${err.name}: ${err.message}`);
      }
    }
  }
  const { comm: a } = await open(Rechecker);
  await a.hostEvent({ type: 'host.recheck' });
  assert.equal(await a.receiveFrom(), 'rechecked');
  const { comm: b } = await open(Plain);
  await b.hostEvent();
  assert.deepEqual(b.logs, []);
  await b.sendTo('x');
  assert.equal(await b.receiveFrom(), 'InvalidEventError: invalid-event: event types starting with "host." are the host\'s own');
});

test('per-event caps: too many host calls trap, too many log lines are dropped', async () => {
  class Greedy extends WebsocketConsumer {
    receive({ text }) {
      if (text === 'log') for (let i = 0; i < 100; i++) console.log(`line ${i}`);
      if (text === 'spam') for (let i = 0; i < 17; i++) this.groupSend('g', { type: 'x' });
    }
  }
  const { comm } = await open(Greedy);
  await comm.sendTo('log');
  assert.equal(comm.logs.length, 64);
  assert.equal(comm.closed, false);
  await comm.sendTo('spam');
  assert.equal((await comm.receiveOutput()).code, 1011);
  assert.match(comm.error.message, /one event made more than 16 group-send calls/);
});

test('groups: invalid names throw InvalidGroupNameError', async () => {
  class Grouper extends WebsocketConsumer {
    receive({ text }) {
      try {
        this.groupAdd(text);
        this.send('ok');
      } catch (err) {
        this.send(`${err.name}: ${err instanceof InvalidGroupNameError}`);
      }
    }
  }
  const { comm } = await open(Grouper);
  await comm.sendTo('good.name-1_x');
  assert.equal(await comm.receiveFrom(), 'ok');
  await comm.sendTo('bad name');
  assert.equal(await comm.receiveFrom(), 'InvalidGroupNameError: true');
  await comm.sendTo('x'.repeat(100));
  assert.equal(await comm.receiveFrom(), 'InvalidGroupNameError: true');
});

test('db.insert returns the row as written; db.query rows as objects; errors are classes', async () => {
  const db = new FakeDatabase({ read: ['notes'], write: ['notes'] });
  db.createTable('notes', {
    id: 'char(32) NOT NULL PRIMARY KEY',
    body: 'text NOT NULL',
    stars: 'integer NOT NULL',
    score: 'real NULL',
    created_at: 'datetime NOT NULL',
  });
  db.createTable('secrets', { id: 'integer PRIMARY KEY' });
  class Notes extends JsonWebsocketConsumer {
    receiveJson({ op, args }) {
      try {
        this.sendJson({ ok: this.db[op](...args) });
      } catch (err) {
        this.sendJson({ error: err.name, variant: err.variant, isDb: err instanceof DatabaseError });
      }
    }
  }
  const { comm } = await open(Notes, { host: new FakeHost({ database: db }) });
  await comm.sendJsonTo({ op: 'insert', args: ['notes', { body: 'hi', stars: 3, score: 0.5 }] });
  const { ok: row } = await comm.receiveJsonFrom();
  assert.match(row.id, /^[0-9a-f]{32}$/);
  assert.equal(row.id[12], '7'); // a version 7 UUID, as the host makes
  assert.match(row.created_at, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$/);
  assert.deepEqual({ ...row, id: 0, created_at: 0 }, { id: 0, body: 'hi', stars: 3, score: 0.5, created_at: 0 });

  await comm.sendJsonTo({ op: 'query', args: ['SELECT body, stars FROM notes WHERE stars >= ?1', [2]] });
  assert.deepEqual(await comm.receiveJsonFrom(), { ok: [{ body: 'hi', stars: 3 }] });

  const failures = [
    [['insert', ['notes', { body: null, stars: 1 }]], 'ConstraintError', 'constraint'],
    [['insert', ['nope', { a: 1 }]], 'NoSuchTableError', 'no-such-table'],
    [['query', ['SELECT * FROM secrets', []]], 'AccessDeniedError', 'access-denied'],
    [['query', ['DELETE FROM notes', []]], 'InvalidError', 'invalid'],
    [['query', ['SELECT * FROM notes WHERE id = ?1', []]], 'InvalidError', 'invalid'],
  ];
  for (const [call, name, variant] of failures) {
    await comm.sendJsonTo({ op: call[0], args: call[1] });
    assert.deepEqual(await comm.receiveJsonFrom(), { error: name, variant, isDb: true }, JSON.stringify(call));
  }
  assert.ok(new ConstraintError('constraint', 'x') instanceof DatabaseError);
  assert.ok(new AccessDeniedError('access-denied') instanceof Error);
  assert.equal(new NoSuchTableError('no-such-table', 'x').message, 'no-such-table: x');
});

test('a state larger than the host keeps traps the consumer', async () => {
  class Hoarder extends WebsocketConsumer {
    receive() {
      this.pile = 'x'.repeat(100);
    }
  }
  const { comm } = await open(Hoarder, { host: new FakeHost({ limits: { maxStateBytes: 50 } }) });
  await comm.sendTo('x');
  assert.equal(comm.error.name, 'StateTooLargeError');
  assert.match(comm.error.message, /keeps at most 50/);
});

test('consumers made outside the runtime say so', () => {
  class Lonely extends WebsocketConsumer {}
  assert.throws(() => new Lonely().scope, /consumers are created by the runtime/);
  assert.throws(() => defineConsumer(class {}, { log() {} }), /must extend WebsocketConsumer/);
});
