// The consumer classes: Channels' WebsocketConsumer and JsonWebsocketConsumer
// in JavaScript idiom.
//
// A consumer object lives for one event. The glue (define.js) makes a new
// one per event, restores its saved properties onto it, calls one handler,
// and saves the properties again. Everything it asks of the host goes
// through the event's context, reached with a private field so that no
// host plumbing shows up among the properties that are persisted.

import {
  MessageTooLargeError,
  PureEventError,
  databaseError,
  groupError,
  payloadOf,
} from './errors.js';
import { toScope } from './scope.js';
import { fromRow, fromValue, toRow, toValue } from './values.js';

/** What one event's handler may use of the host. Made by the glue. */
export class EventContext {
  #scope;
  #db;

  /**
   * @param host the host-call layer (the component's imports, or the fake host)
   * @param pureType the event type when the handler runs as a pure event
   */
  constructor(host, pureType) {
    this.host = host;
    this.pureType = pureType;
  }

  /** Throws when a pure event's handler reaches for more than `send`. */
  guard(what) {
    if (this.pureType !== undefined) throw new PureEventError(this.pureType, what);
  }

  scope() {
    this.guard('this.scope');
    this.#scope ??= toScope(this.host.getScope());
    return this.#scope;
  }

  db() {
    this.guard('this.db');
    this.#db ??= new Database(this.host);
    return this.#db;
  }
}

// The glue hands a context to the constructor it is about to run.
let pendingContext;

/** Makes a consumer for one event (used by the glue only). */
export function createConsumer(ConsumerClass, context) {
  pendingContext = context;
  try {
    return new ConsumerClass();
  } finally {
    pendingContext = undefined;
  }
}

export class WebsocketConsumer {
  /** Event types whose handler only sends (see the WIT `consumer-info`); returned by `describe`. */
  static pureEvents = [];

  /** Groups joined before `connect()` and left after `disconnect()`, as in Channels. */
  static groups = [];

  #context;

  constructor() {
    this.#context = pendingContext;
    pendingContext = undefined;
  }

  #host(what) {
    if (!this.#context) {
      throw new Error(`${what} needs the host: consumers are created by the runtime or a WebsocketCommunicator, not with new`);
    }
    return this.#context;
  }

  /** The connection's scope: path, urlRoute.kwargs, query, queryString, subprotocols, user. */
  get scope() {
    return this.#host('this.scope').scope();
  }

  /** This connection's unique name (the host's connection id). */
  get channelName() {
    return this.scope.connectionId;
  }

  /** The database: `insert(table, row)` and `query(sql, params)`. */
  get db() {
    return this.#host('this.db').db();
  }

  /** Accepts the handshake, optionally choosing one of the offered subprotocols. */
  accept(subprotocol) {
    const context = this.#host('accept()');
    context.guard('accept()');
    context.host.accept(subprotocol ?? undefined);
  }

  /**
   * Sends a text (string) or binary (Uint8Array, ArrayBuffer) message.
   * Returns false when the connection is already closed (the message is
   * dropped, as the client is gone); throws MessageTooLargeError past the
   * host's message size.
   */
  send(data) {
    const { host } = this.#host('send()');
    let message;
    if (typeof data === 'string') message = { tag: 'text', val: data };
    else if (data instanceof Uint8Array) message = { tag: 'binary', val: data };
    else if (data instanceof ArrayBuffer) message = { tag: 'binary', val: new Uint8Array(data) };
    else throw new TypeError(`send() takes a string or a Uint8Array, not ${typeName(data)}; use sendJson() for objects`);
    try {
      host.send(message);
      return true;
    } catch (err) {
      const payload = payloadOf(err);
      if (payload?.tag === 'too-large') throw new MessageTooLargeError(payload.val);
      return false; // closed
    }
  }

  /**
   * Closes the connection with 1000 or an application code (3000-4999).
   * Before accept() this refuses the handshake (HTTP 403).
   */
  close(code = 1000, reason = '') {
    const context = this.#host('close()');
    context.guard('close()');
    if (!(code === 1000 || (Number.isInteger(code) && code >= 3000 && code <= 4999))) {
      throw new RangeError(`close code ${code} is reserved; use 1000 or 3000-4999`);
    }
    context.host.close(code, String(reason));
  }

  /** Adds this connection to a group. */
  groupAdd(group) {
    this.#groupCall('groupAdd', group);
  }

  /** Removes this connection from a group. */
  groupDiscard(group) {
    this.#groupCall('groupDiscard', group);
  }

  /**
   * Sends an event (an object with a string `type`) to every connection in
   * the group; each runs the handler its type names (`chat.message` →
   * `chat_message(event)`).
   */
  groupSend(group, event) {
    if (event === null || typeof event !== 'object' || typeof event.type !== 'string') {
      throw new TypeError('groupSend(group, event): event must be an object with a string "type"');
    }
    this.#groupCall('groupSend', group, JSON.stringify(event));
  }

  #groupCall(method, group, ...rest) {
    const context = this.#host(`${method}()`);
    context.guard(`${method}()`);
    try {
      context.host[method](group, ...rest);
    } catch (err) {
      throw groupError(err);
    }
  }

  /** A client asks to connect. The default accepts. */
  connect() {
    this.accept();
  }

  /** A frame from the client: `{ text }` or `{ bytes }` (a Uint8Array). */
  receive({ text, bytes }) {}

  /** The connection closed with `code`. */
  disconnect(code) {}
}

/** A consumer whose frames are JSON text, as Channels' JsonWebsocketConsumer. */
export class JsonWebsocketConsumer extends WebsocketConsumer {
  /**
   * Decodes a text frame and calls receiveJson. A binary frame, or text
   * that is not JSON, throws (the connection closes with 1011), as in
   * Channels; override receive() to answer such frames instead.
   */
  receive({ text, bytes }) {
    if (text === undefined) {
      throw new TypeError(`${this.constructor.name} got a binary frame (${bytes.length} bytes); JsonWebsocketConsumer takes text`);
    }
    return this.receiveJson(this.decodeJson(text));
  }

  /** A decoded JSON message from the client. */
  receiveJson(content) {}

  /** Sends `content` as JSON text. */
  sendJson(content) {
    return this.send(this.encodeJson(content));
  }

  decodeJson(text) {
    return JSON.parse(text);
  }

  encodeJson(content) {
    return JSON.stringify(content);
  }
}

/** `this.db`: the database, limited to the consumer's granted tables. */
export class Database {
  #host;

  constructor(host) {
    this.#host = host;
  }

  /**
   * Inserts a row (an object of column values) and returns it as written,
   * every column included: the host fills a missing char(32) primary key
   * and a missing NOT NULL datetime.
   */
  insert(table, row) {
    const pairs = toRow(table, row);
    let written;
    try {
      written = this.#host.dbInsert(table, pairs);
    } catch (err) {
      throw databaseError(err);
    }
    return fromRow(written);
  }

  /** Runs one read-only statement with `?1, ?2...` parameters; returns the rows as objects. */
  query(sql, params = []) {
    if (!Array.isArray(params)) throw new TypeError('db.query(sql, params): params must be an array');
    const values = params.map((param, index) => toValue(param, `parameter ?${index + 1}`));
    let result;
    try {
      result = this.#host.dbQuery(sql, values);
    } catch (err) {
      throw databaseError(err);
    }
    return result.rows.map((row) => {
      const object = {};
      result.columns.forEach((column, index) => {
        object[column] = fromValue(row[index]);
      });
      return object;
    });
  }
}

// Methods of the base classes: never targets of an event's `type`, so a
// group event `{"type": "close"}` cannot call close().
export const RESERVED_METHODS = new Set(
  [WebsocketConsumer.prototype, JsonWebsocketConsumer.prototype, Object.prototype].flatMap((proto) =>
    Object.getOwnPropertyNames(proto),
  ),
);

function typeName(value) {
  if (value === null) return 'null';
  if (typeof value === 'object') return `a ${value.constructor?.name ?? 'object'}`;
  return `a ${typeof value}`;
}

