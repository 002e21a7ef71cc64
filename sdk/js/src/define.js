// The glue: a consumer class as the WIT `handler` interface.
//
// defineConsumer(ConsumerClass, host) returns the object a component
// exports as `handler` (describe, connect, receive, handleEvent,
// disconnect). The test harness calls the very same object with a fake host.
// Each export:
//   1. makes a new consumer object (instances are disposable: nothing lives
//      in module globals between events),
//   2. restores the properties saved in the host's state blob onto it,
//   3. runs the handler with console.* routed to the host log,
//   4. saves the properties back when they changed,
//   5. on an exception, logs it with its stack and throws it on, so the
//      instance traps and the host closes this one connection with 1011.

import { EventContext, RESERVED_METHODS, WebsocketConsumer, createConsumer } from './consumer.js';
import { formatError, routeConsole } from './log.js';
import { loadState, saveState } from './state.js';

/**
 * The `handler` export for `ConsumerClass`.
 *
 * @param ConsumerClass a subclass of WebsocketConsumer
 * @param host the host-call layer: `consumer-host-sdk/host/component` inside
 *   a component, a fake host in tests
 */
export function defineConsumer(ConsumerClass, host) {
  if (typeof ConsumerClass !== 'function' || !(ConsumerClass.prototype instanceof WebsocketConsumer)) {
    throw new TypeError('defineConsumer(ConsumerClass, host): ConsumerClass must extend WebsocketConsumer');
  }
  if (!host || typeof host.log !== 'function') {
    throw new TypeError('defineConsumer(ConsumerClass, host): host is the host-call layer (see consumer-host-sdk/host/component)');
  }
  const pureEvents = listOfStrings(ConsumerClass.pureEvents, 'pureEvents');
  const groups = listOfStrings(ConsumerClass.groups, 'groups');
  const pure = new Set(pureEvents);

  // Runs one handler with the five steps above. `persist` is false where
  // saving is pointless (disconnect: the connection is gone) and `restore`
  // where there is nothing to restore yet (connect).
  async function run(what, body, { restore = true, persist = true, pureType } = {}) {
    const restoreConsole = routeConsole(host);
    try {
      const context = new EventContext(host, pureType);
      const saved = pureType === undefined && restore ? loadState(host) : { text: undefined, props: {} };
      const consumer = createConsumer(ConsumerClass, context);
      Object.assign(consumer, saved.props);
      await body(consumer);
      if (pureType === undefined && persist) saveState(host, consumer, saved.text);
    } catch (err) {
      host.log('error', `${ConsumerClass.name}.${what} failed: ${formatError(err)}`);
      throw err;
    } finally {
      restoreConsole();
    }
  }

  return {
    describe() {
      return { pureEvents: [...pureEvents] };
    },

    connect() {
      return run('connect()', async (consumer) => {
        for (const group of groups) consumer.groupAdd(group);
        await consumer.connect();
      }, { restore: false });
    },

    receive(message) {
      const frame = message.tag === 'text' ? { text: message.val } : { bytes: asBytes(message.val) };
      return run('receive()', (consumer) => consumer.receive(frame));
    },

    handleEvent(json) {
      let event;
      try {
        event = JSON.parse(json);
      } catch (err) {
        // The host only forwards JSON objects with a string type; this is a host bug.
        host.log('warn', `ignored a group event that is not JSON: ${err.message}`);
        return Promise.resolve();
      }
      const type = event?.type;
      const method = handlerName(type);
      const pureType = pure.has(type) ? type : undefined;
      return run(`${method ?? 'handleEvent'}()`, async (consumer) => {
        const handler = method === undefined ? undefined : consumer[method];
        if (typeof handler !== 'function') {
          // The host's own events (host.recheck) are for consumers that want them.
          if (typeof type === 'string' && type.startsWith('host.')) return;
          const expected = method === undefined ? 'the type names no method' : `expected a method ${method}(event)`;
          console.warn(`${ConsumerClass.name} has no handler for event type ${JSON.stringify(type)} (${expected}); event ignored`);
          return;
        }
        await handler.call(consumer, event);
      }, { pureType });
    },

    disconnect(code) {
      return run('disconnect()', async (consumer) => {
        await consumer.disconnect(code);
        for (const group of groups) consumer.groupDiscard(group);
      }, { persist: false });
    },
  };
}

/**
 * The method an event type names, as in Channels: dots become underscores
 * (`chat.message` → `chat_message`). Undefined for a type that names no
 * possible handler: not an identifier, private (`_x`), or a base-class method.
 */
export function handlerName(type) {
  if (typeof type !== 'string') return undefined;
  const name = type.replaceAll('.', '_');
  if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name) || RESERVED_METHODS.has(name)) return undefined;
  return name;
}

function listOfStrings(value, name) {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string')) {
    throw new TypeError(`static ${name} must be an array of strings`);
  }
  return value;
}

function asBytes(value) {
  return value instanceof Uint8Array ? value : Uint8Array.from(value);
}
