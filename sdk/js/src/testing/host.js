// The fake host: what consumer-host does around a consumer, in memory.
//
// A FakeHost holds the groups (shared by every connection made on it), a
// FakeDatabase and the host's limits. Each connection gets a FakeConnection,
// which is the host-call layer its consumer's glue talks to: the same
// functions, arguments and thrown errors as the component's imports. Events
// run one at a time across the whole FakeHost, in the order they were
// caused, so tests are deterministic; `settled()` waits for every event
// still to run (group sends cascade).

import { defineConsumer } from '../define.js';
import { FakeDatabase } from './database.js';

/** consumer-host's default limits (see consumer-host.toml: [limits], [layer], [consumer.X.sandbox]). */
export const DEFAULT_LIMITS = Object.freeze({
  /** The largest message a client may send; past it the connection closes with 1009. */
  maxMessageBytes: 64 * 1024,
  /** A consumer may send this much more than a client may (its own framing of what a client sent). */
  sendHeadroomBytes: 16 * 1024,
  maxEventBytes: 256 * 1024,
  maxStateBytes: 64 * 1024,
  // Per event: past these the host traps the consumer (1011)...
  maxSendsPerEvent: 64,
  maxSendBytesPerEvent: 1024 * 1024,
  maxGroupSendsPerEvent: 16,
  maxGroupChangesPerEvent: 32,
  maxDbCallsPerEvent: 32,
  // ...except log lines, which are dropped past the cap.
  maxLogLinesPerEvent: 64,
  maxLogBytes: 4096,
});

/** Event types the host sends itself (`host.recheck`); consumers cannot. */
const HOST_EVENT_PREFIX = 'host.';

const encoder = new TextEncoder();

/** A host rule broken: in consumer-host this traps the instance at once. */
export class HostTrap extends Error {
  constructor(message) {
    super(message);
    this.name = 'HostTrap';
  }
}

function resultError(tag, val) {
  const err = new Error(val === undefined ? tag : `${tag}: ${val}`);
  err.payload = val === undefined ? { tag } : { tag, val };
  return err;
}

export class FakeHost {
  static #shared;

  /** The FakeHost communicators use when given none. */
  static shared() {
    FakeHost.#shared ??= new FakeHost();
    return FakeHost.#shared;
  }

  #tail = Promise.resolve();
  #nextId = 1;

  /**
   * @param options.database a FakeDatabase (an empty one by default)
   * @param options.limits overrides of DEFAULT_LIMITS
   */
  constructor({ database = new FakeDatabase(), limits = {} } = {}) {
    this.database = database;
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    /** group name → Set of FakeConnection */
    this.groups = new Map();
  }

  /** A new connection id, unique on this host. */
  connectionId() {
    return `test-conn-${this.#nextId++}`;
  }

  /** Runs `task` after every event already queued. */
  enqueue(task) {
    const run = this.#tail.then(task);
    this.#tail = run.catch(() => {});
    return run;
  }

  /** Resolves once no event is left to run. */
  async settled() {
    for (;;) {
      const tail = this.#tail;
      await tail;
      // Yield a macrotask so that work queued by the last event is seen.
      await new Promise((resolve) => setImmediate(resolve));
      if (tail === this.#tail) return;
    }
  }

  /** The connections in a group. */
  members(group) {
    return [...(this.groups.get(group) ?? [])];
  }

  join(group, connection) {
    if (!this.groups.has(group)) this.groups.set(group, new Set());
    this.groups.get(group).add(connection);
  }

  leave(group, connection) {
    const members = this.groups.get(group);
    members?.delete(connection);
    if (members?.size === 0) this.groups.delete(group);
  }

  /**
   * Delivers a group event to every member as the host does: for members
   * whose consumer lists the type in pureEvents, the handler runs once
   * (per consumer class) and its frames go to all of them.
   */
  deliver(group, json, type) {
    const members = this.members(group);
    const pureByConsumer = new Map();
    for (const member of members) {
      if (member.pureEvents.has(type)) {
        if (!pureByConsumer.has(member.consumer)) pureByConsumer.set(member.consumer, []);
        pureByConsumer.get(member.consumer).push(member);
      } else {
        this.enqueue(() => member.handleEvent(json));
      }
    }
    for (const [consumer, pureMembers] of pureByConsumer) {
      this.enqueue(() => renderPure(consumer, json, pureMembers));
    }
  }
}

/**
 * What a FakeConnection runs: a WebsocketConsumer subclass (through
 * defineConsumer, as the component's glue does), or anything with
 * `makeHandler(hostCallLayer)` returning a `handler` (e.g. a built component).
 */
export function consumerOf(consumer) {
  if (typeof consumer === 'function') {
    let kind = KINDS.get(consumer);
    if (!kind) {
      kind = { name: consumer.name, makeHandler: (layer) => defineConsumer(consumer, layer) };
      KINDS.set(consumer, kind);
    }
    return kind;
  }
  if (typeof consumer?.makeHandler !== 'function') {
    throw new TypeError('expected a WebsocketConsumer subclass or an object with makeHandler(host)');
  }
  return consumer;
}
const KINDS = new WeakMap();

// One run of a pure event's handler for many members: a host-call layer
// that only sends (the SDK refuses the rest before it gets here) and logs.
async function renderPure(consumer, json, members) {
  const frames = [];
  const pureHost = {
    send(message) {
      frames.push(message);
    },
    log(level, message) {
      for (const member of members) member.log(level, message);
    },
  };
  for (const name of ['getScope', 'accept', 'close', 'groupAdd', 'groupDiscard', 'groupSend', 'dbInsert', 'dbQuery', 'getState', 'setState']) {
    pureHost[name] = () => {
      throw new HostTrap(`a pure event's handler called ${name}`);
    };
  }
  try {
    await consumer.makeHandler(pureHost).handleEvent(json);
  } catch (err) {
    for (const member of members) member.fault(err);
    return;
  }
  for (const member of members) {
    for (const message of frames) member.push(message);
  }
}

/**
 * One connection as the host sees it, and the host-call layer its consumer
 * uses (getScope, accept, send, close, groupAdd, ..., log).
 */
export class FakeConnection {
  /** 'pending' until connect decides, then 'accepted' or 'refused'. */
  handshake = 'pending';
  /** Frames and closes for the client, oldest first. */
  outputs = [];
  /** Log lines, `{ level, message }`. */
  logs = [];
  /** Groups this connection is in. */
  groups = new Set();
  /** The state blob. */
  state = undefined;
  /** The close the consumer asked for, `{ code, reason }`. */
  closeRequest = undefined;
  /** Set once the connection is over. */
  ended = false;
  /** The error that faulted the consumer (closing the connection with 1011). */
  error = undefined;

  #trap;
  #used = newUsage();

  /**
   * @param fakeHost the FakeHost
   * @param consumer a WebsocketConsumer subclass, or `{ makeHandler(host) }` (see consumerOf)
   * @param scope the WIT scope record
   */
  constructor(fakeHost, consumer, scope) {
    this.fakeHost = fakeHost;
    this.consumer = consumerOf(consumer);
    this.scope = scope;
    this.handler = this.consumer.makeHandler(this);
    // The host asks once per version, before the consumer serves anyone.
    this.pureEvents = new Set(this.handler.describe().pureEvents);
  }

  // ---- the host-call layer ----

  getScope() {
    return structuredClone(this.scope);
  }

  accept(subprotocol) {
    if (this.handshake !== 'pending') return;
    if (subprotocol !== undefined && !this.scope.subprotocols.includes(subprotocol)) {
      this.#misbehaved(`accept chose subprotocol ${JSON.stringify(subprotocol)}, which the client did not offer`);
    }
    this.handshake = 'accepted';
    this.subprotocol = subprotocol;
  }

  send(message) {
    const limits = this.fakeHost.limits;
    const length = message.tag === 'text' ? encoder.encode(message.val).length : message.val.length;
    this.#within('sends', limits.maxSendsPerEvent, 'send');
    this.#used.sendBytes += length;
    if (this.#used.sendBytes > limits.maxSendBytesPerEvent) this.#misbehaved(`one event sent more than ${limits.maxSendBytesPerEvent} bytes`);
    const largest = limits.maxMessageBytes + limits.sendHeadroomBytes;
    if (length > largest) throw resultError('too-large', largest);
    // Frames sent after close() in the same event still go out, before the close frame.
    if (this.ended) throw resultError('closed');
    this.push(message);
  }

  close(code, reason) {
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
      this.#misbehaved(`close code ${code} is reserved; use 1000 or 3000-4999`);
    }
    if (this.handshake === 'pending') this.handshake = 'refused';
    this.closeRequest ??= { code, reason: truncate(reason, 123) };
  }

  groupAdd(group) {
    checkGroup(group);
    this.#within('groupChanges', this.fakeHost.limits.maxGroupChangesPerEvent, 'group-add or group-discard');
    if (!this.groups.has(group)) {
      this.groups.add(group);
      this.fakeHost.join(group, this);
    }
  }

  groupDiscard(group) {
    checkGroup(group);
    this.#within('groupChanges', this.fakeHost.limits.maxGroupChangesPerEvent, 'group-add or group-discard');
    if (this.groups.delete(group)) this.fakeHost.leave(group, this);
  }

  groupSend(group, event) {
    checkGroup(group);
    this.#within('groupSends', this.fakeHost.limits.maxGroupSendsPerEvent, 'group-send');
    const limit = this.fakeHost.limits.maxEventBytes;
    if (encoder.encode(event).length > limit) throw resultError('too-large', limit);
    let type;
    try {
      type = JSON.parse(event)?.type;
    } catch (err) {
      throw resultError('invalid-event', `the event is not a JSON object: ${err.message}`);
    }
    if (typeof type !== 'string') throw resultError('invalid-event', 'the event has no string "type"');
    if (type.startsWith(HOST_EVENT_PREFIX)) throw resultError('invalid-event', `event types starting with "${HOST_EVENT_PREFIX}" are the host's own`);
    this.fakeHost.deliver(group, event, type);
  }

  dbInsert(table, row) {
    this.#within('dbCalls', this.fakeHost.limits.maxDbCallsPerEvent, 'db-insert or db-query');
    return this.fakeHost.database.dbInsert(table, row);
  }

  dbQuery(sql, params) {
    this.#within('dbCalls', this.fakeHost.limits.maxDbCallsPerEvent, 'db-insert or db-query');
    return this.fakeHost.database.dbQuery(sql, params);
  }

  getState() {
    return this.state === undefined ? undefined : this.state.slice();
  }

  setState(value) {
    const limit = this.fakeHost.limits.maxStateBytes;
    if (value.length > limit) {
      const err = new Error(`the state blob exceeds ${limit} bytes`);
      err.payload = limit; // result<_, u32>: the error is the limit itself
      throw err;
    }
    this.state = value.slice();
  }

  log(level, message) {
    this.#used.logLines += 1;
    if (this.#used.logLines > this.fakeHost.limits.maxLogLinesPerEvent) return; // dropped, as the host does
    const entry = { level, message: truncate(message, this.fakeHost.limits.maxLogBytes) };
    this.logs.push(entry);
    if (process.env.CONSUMER_HOST_TEST_LOG) process.stderr.write(`[${this.scope.connectionId} ${level}] ${entry.message}\n`);
  }

  // ---- events, as the host runs them ----

  /** Queues a frame for the client (held until the handshake is accepted). */
  push(message) {
    if (this.ended) return;
    this.outputs.push(message.tag === 'text' ? { type: 'websocket.send', text: message.val } : { type: 'websocket.send', bytes: message.val.slice() });
  }

  async connect() {
    const ok = await this.#call(() => this.handler.connect());
    if (!ok) return { connected: false, status: 500 };
    if (this.handshake !== 'accepted') {
      this.handshake = 'refused';
      this.ended = true;
      this.outputs = [];
      this.#leaveAll();
      return { connected: false, status: 403, closeCode: this.closeRequest?.code };
    }
    await this.#afterEvent();
    return { connected: true, subprotocol: this.subprotocol };
  }

  async receive(message) {
    if (this.ended) return;
    const length = message.tag === 'text' ? encoder.encode(message.val).length : message.val.length;
    if (length > this.fakeHost.limits.maxMessageBytes) {
      this.closeRequest = { code: 1009, reason: 'message too big' };
      return this.#afterEvent();
    }
    if (await this.#call(() => this.handler.receive(message))) await this.#afterEvent();
  }

  async handleEvent(json) {
    if (this.ended) return;
    if (await this.#call(() => this.handler.handleEvent(json))) await this.#afterEvent();
  }

  /** The client went away with `code`. */
  async disconnect(code) {
    if (this.ended) return;
    this.ended = true;
    await this.#call(() => this.handler.disconnect(code));
    this.#leaveAll();
  }

  /** The consumer failed: closed with 1011, no disconnect, out of every group. */
  fault(err) {
    if (this.error === undefined) this.error = err;
    if (!this.ended && this.handshake === 'accepted') {
      this.outputs.push({ type: 'websocket.close', code: 1011, reason: 'consumer error' });
    }
    this.ended = true;
    this.#leaveAll();
  }

  // Runs one export: true when it returned, false when it faulted (a throw,
  // or a host rule broken even if the consumer caught the error).
  async #call(invoke) {
    this.#trap = undefined;
    this.#used = newUsage();
    try {
      await invoke();
      if (this.#trap) throw this.#trap;
      return true;
    } catch (err) {
      this.fault(this.#trap ?? err);
      return false;
    }
  }

  // A close the consumer asked for ends the connection: the close frame,
  // then disconnect(code), then out of every group.
  async #afterEvent() {
    if (!this.closeRequest || this.ended || this.handshake !== 'accepted') return;
    const { code, reason } = this.closeRequest;
    this.outputs.push({ type: 'websocket.close', code, reason });
    this.ended = true;
    await this.#call(() => this.handler.disconnect(code));
    this.#leaveAll();
  }

  #leaveAll() {
    for (const group of this.groups) this.fakeHost.leave(group, this);
    this.groups.clear();
  }

  #within(counter, limit, what) {
    this.#used[counter] += 1;
    if (this.#used[counter] > limit) this.#misbehaved(`one event made more than ${limit} ${what} calls`);
  }

  #misbehaved(text) {
    this.#trap = new HostTrap(`consumer misbehaved: ${text}`);
    throw this.#trap;
  }
}

function newUsage() {
  return { sends: 0, sendBytes: 0, groupSends: 0, groupChanges: 0, dbCalls: 0, logLines: 0 };
}

function checkGroup(group) {
  if (!(typeof group === 'string' && group.length > 0 && group.length < 100 && /^[A-Za-z0-9._-]+$/.test(group))) {
    throw resultError('invalid-name', `group names are 1 to 99 ASCII letters, digits, "-", "_" or "."; got ${JSON.stringify(group)}`);
  }
}

// Cuts text to at most `bytes` UTF-8 bytes, at a character boundary.
function truncate(text, bytes) {
  const encoded = encoder.encode(text);
  if (encoded.length <= bytes) return text;
  let end = bytes;
  while (end > 0 && (encoded[end] & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(encoded.subarray(0, end));
}
