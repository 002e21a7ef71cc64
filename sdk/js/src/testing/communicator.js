// WebsocketCommunicator: Channels' socket-free test client, for consumer-host.
//
//   const comm = new WebsocketCommunicator(ChatConsumer, '/ws/room/', { host, user, route: 'ws/<room_name>/' });
//   const { connected } = await comm.connect();
//   await comm.sendJsonTo({ ... });
//   assert.deepEqual(await comm.receiveJsonFrom(), { ... });
//   await comm.disconnect();
//
// It drives the consumer through the same glue (defineConsumer) as the
// component, against a FakeHost: a new consumer object per event, properties
// kept in the connection's state blob between events, groups shared by the
// communicators of one FakeHost. Every call returns once all the events it
// caused (group sends included) have run, so no test needs a timeout.

import { FakeConnection, FakeHost } from './host.js';

export class WebsocketCommunicator {
  #connection;
  #host;

  /**
   * @param ConsumerClass the consumer under test (or `{ makeHandler(host) }`, e.g. a built component)
   * @param path the request path, e.g. `/ws/22de0f4f-.../`
   * @param options.host the FakeHost (groups, database, limits); FakeHost.shared() by default
   * @param options.user `{ id, name, email }`, or null for an anonymous connection
   * @param options.route a Django-style route such as `ws/<room_name>/`, to take urlKwargs from the path
   * @param options.urlKwargs the route's captured values, as an object (instead of `route`)
   * @param options.query the query string's pairs: an object, pairs, or a string (the token already removed)
   * @param options.subprotocols the subprotocols the client offers
   */
  constructor(ConsumerClass, path, { host = FakeHost.shared(), user = null, route, urlKwargs, query = [], subprotocols = [] } = {}) {
    this.#host = host;
    const scope = {
      connectionId: host.connectionId(),
      path,
      urlKwargs: Object.entries(urlKwargs ?? (route ? matchRoute(route, path) : {})).map(([k, v]) => [k, String(v)]),
      query: queryPairs(query),
      user: user ? { id: String(user.id), name: user.name ?? undefined, email: user.email ?? '' } : undefined,
      subprotocols: [...subprotocols],
    };
    this.#connection = new FakeConnection(host, ConsumerClass, scope);
  }

  /**
   * Runs connect. Resolves `{ connected: true, subprotocol }` when the
   * consumer accepted, else `{ connected: false, status, closeCode }`:
   * status 403 when it refused (closeCode is the code it gave close(), if
   * any), 500 when it failed.
   */
  async connect() {
    if (this.#connection.handshake !== 'pending') throw new Error('connect() was already called');
    const result = this.#host.enqueue(() => this.#connection.connect());
    await this.#host.settled();
    return result;
  }

  /** Sends a frame: a string (text), a Uint8Array (binary), or `{ text }` / `{ bytes }`. */
  async sendTo(data) {
    this.#ensureOpen('sendTo');
    let message;
    if (typeof data === 'string') message = { tag: 'text', val: data };
    else if (data instanceof Uint8Array) message = { tag: 'binary', val: data };
    else if (data?.text !== undefined) message = { tag: 'text', val: data.text };
    else if (data?.bytes !== undefined) message = { tag: 'binary', val: data.bytes };
    else throw new TypeError('sendTo(data): a string, a Uint8Array, { text } or { bytes }');
    this.#host.enqueue(() => this.#connection.receive(message));
    await this.#host.settled();
  }

  /** Sends `content` as a JSON text frame. */
  sendJsonTo(content) {
    return this.sendTo(JSON.stringify(content));
  }

  /**
   * The next output: `{ type: 'websocket.send', text | bytes }` or
   * `{ type: 'websocket.close', code, reason }`. Throws when there is none.
   */
  async receiveOutput() {
    await this.#host.settled();
    const output = this.#connection.outputs.shift();
    if (!output) throw new Error(`the consumer sent nothing${this.#explain()}`);
    return output;
  }

  /** The next frame's data (a string or a Uint8Array). Throws on a close or when nothing was sent. */
  async receiveFrom() {
    const output = await this.receiveOutput();
    if (output.type === 'websocket.close') {
      throw new Error(`the consumer closed the connection (${output.code} ${output.reason}) instead of sending${this.#explain()}`);
    }
    return output.text ?? output.bytes;
  }

  /** The next frame, parsed as JSON. */
  async receiveJsonFrom() {
    const data = await this.receiveFrom();
    if (typeof data !== 'string') throw new Error('expected a text frame, got a binary one');
    return JSON.parse(data);
  }

  /** True when the consumer has sent nothing more. */
  async receiveNothing() {
    await this.#host.settled();
    return this.#connection.outputs.length === 0;
  }

  /**
   * Delivers one of the host's own events to this connection only, as the
   * host does: `{ type: 'host.recheck' }` after it checked the login again.
   */
  async hostEvent(event = { type: 'host.recheck' }) {
    this.#ensureOpen('hostEvent');
    this.#host.enqueue(() => this.#connection.handleEvent(JSON.stringify(event)));
    await this.#host.settled();
  }

  /** The client closes the connection with `code`; runs disconnect. */
  async disconnect(code = 1000) {
    this.#host.enqueue(() => this.#connection.disconnect(code));
    await this.#host.settled();
  }

  /** Log lines the consumer wrote (console.* included): `{ level, message }`. */
  get logs() {
    return this.#connection.logs;
  }

  /** The properties kept in the connection's state blob, parsed (undefined when none). */
  get state() {
    const blob = this.#connection.state;
    return blob === undefined ? undefined : JSON.parse(new TextDecoder().decode(blob));
  }

  /** The groups the connection is in. */
  get groups() {
    return [...this.#connection.groups];
  }

  /** The error that faulted the consumer (the connection then closed with 1011), if any. */
  get error() {
    return this.#connection.error;
  }

  /** True once the connection is over (closed by either side, refused, or faulted). */
  get closed() {
    return this.#connection.ended;
  }

  /** The host's side of the connection (a FakeConnection): its state blob, outputs, groups, host calls. */
  get connection() {
    return this.#connection;
  }

  /** The connection's id (the consumer's channelName). */
  get channelName() {
    return this.#connection.scope.connectionId;
  }

  #ensureOpen(what) {
    if (this.#connection.handshake !== 'accepted') throw new Error(`${what}(): the connection is not open (call connect() first, and the consumer must accept)`);
    if (this.#connection.ended) throw new Error(`${what}(): the connection is closed${this.#explain()}`);
  }

  #explain() {
    const error = this.#connection.error;
    if (error) return `; the consumer failed: ${error.stack ?? error}`;
    const last = this.#connection.logs.slice(-3).map((entry) => `\n  [${entry.level}] ${entry.message}`);
    return last.length ? `; its last log lines:${last.join('')}` : '';
  }
}

// `ws/<room_name>/` against `/ws/abc/` → { room_name: 'abc' }. Converters
// (`<uuid:room_name>`) are accepted and match any one path segment.
function matchRoute(route, path) {
  const pattern = route
    .replace(/^\//, '')
    .split(/(<[^>]+>)/)
    .map((part) => {
      const m = /^<(?:\w+:)?(\w+)>$/.exec(part);
      return m ? `(?<${m[1]}>[^/]+)` : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('');
  const match = new RegExp(`^${pattern}$`).exec(path.replace(/^\//, '').split('?')[0]);
  if (!match) throw new Error(`path ${JSON.stringify(path)} does not match route ${JSON.stringify(route)}`);
  return { ...match.groups };
}

function queryPairs(query) {
  if (typeof query === 'string') return [...new URLSearchParams(query)];
  if (Array.isArray(query)) return query.map(([k, v]) => [String(k), String(v)]);
  return Object.entries(query).map(([k, v]) => [k, String(v)]);
}
