// The built component, run under Node with the fake host: the same glue as
// the native tests, but inside SpiderMonkey, with a new instance for every
// event. Needs the toolchain (see support/component.js); skipped without it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeDatabase, FakeHost, WebsocketCommunicator } from 'consumer-host-sdk/testing';
import { SDK_DIR, loadComponent, runBuild, toolchain, witDir } from './support/component.js';
import { initialMemory } from './support/wasm.js';
import { chatTests } from '../examples/chat/test/scenarios.js';

const TOOLCHAIN = toolchain();
const WIT = witDir();
const skip = !TOOLCHAIN ? 'no toolchain: set CONSUMER_HOST_JS_TOOLCHAIN to a node_modules with componentize-js, esbuild, jco' : !WIT ? 'no WIT 0.2: set CONSUMER_HOST_WIT' : false;
const out = await mkdtemp(join(tmpdir(), 'consumer-host-js-test-'));
after(() => rm(out, { recursive: true, force: true }));

async function build(project, entry, name) {
  const wasm = join(out, `${name}.wasm`);
  const result = await runBuild(['--entry', entry, '--project', project, '--wit', WIT, '-o', wasm]);
  assert.equal(result.code, 0, result.stderr);
  return { wasm, ms: result.ms, size: (await stat(wasm)).size };
}

// Built once, before any test: the chat's scenarios are registered with it.
let chat;
let probe;
if (!skip) {
  chat = await build(join(SDK_DIR, 'examples', 'chat'), 'consumers.js:ChatConsumer', 'chat');
  chat.component = await loadComponent(chat.wasm);
  chatTests(chat.component, 'chat component');
}

test('the chat component: size, build time, imports, initial memory', { skip }, async (t) => {
  const bytes = await readFile(chat.wasm);
  const memory = initialMemory(bytes);
  t.diagnostic(`chat component: ${(chat.size / 1e6).toFixed(1)} MB, built in ${(chat.ms / 1000).toFixed(1)} s, initial memory ${(memory / 2 ** 20).toFixed(2)} MiB`);
  assert.ok(memory < 16 * 2 ** 20, `initial memory ${memory} must fit the host's default 16 MiB cap`);
  const jco = await import(new URL(`file://${join(TOOLCHAIN, '@bytecodealliance/jco/dist/api.js')}`).href);
  const wit = await jco.componentWit(bytes);
  assert.match(wit, /export consumer-host:consumer\/handler@0\.2\.0;/);
  const wasiImports = [...wit.matchAll(/import (wasi:[\w-]+\/[\w-]+)@/g)].map((m) => m[1]).sort();
  t.diagnostic(`WASI imports: ${wasiImports.join(', ')}`);
  assert.deepEqual(wasiImports, ['wasi:cli/stderr', 'wasi:clocks/monotonic-clock', 'wasi:clocks/wall-clock', 'wasi:io/error', 'wasi:io/poll', 'wasi:io/streams', 'wasi:random/random']);
});

before(async () => {
  if (skip) return;
  probe = await build(join(SDK_DIR, 'test', 'fixtures', 'probe'), 'consumers.js:ProbeConsumer', 'probe');
  probe.component = await loadComponent(probe.wasm);
});

function probeHost() {
  const db = new FakeDatabase();
  db.createTable('items', { id: 'integer PRIMARY KEY', n: 'integer NOT NULL', big: 'integer', flag: 'integer' });
  return new FakeHost({ database: db });
}

async function probeConnection(host = probeHost()) {
  const comm = new WebsocketCommunicator(probe.component, '/probe/', { host, user: { id: 'f'.repeat(32), name: 'P' } });
  assert.deepEqual(await comm.connect(), { connected: true, subprotocol: undefined });
  return comm;
}

test('inside the component: real clock and randomness in every instance', { skip }, async () => {
  const comm = await probeConnection();
  await comm.sendJsonTo({ op: 'env', arg: [1, 'a'] });
  await comm.sendJsonTo({ op: 'env', arg: null });
  const first = await comm.receiveJsonFrom();
  const second = await comm.receiveJsonFrom();
  assert.ok(Math.abs(first.now - Date.now()) < 60_000, `Date.now() in the component: ${first.now}`);
  assert.notEqual(first.random, second.random, 'two fresh instances must not replay one random sequence');
  assert.notEqual(first.uuid, second.uuid);
  assert.equal(first.described, 'object:[1,"a"]');
});

test('inside the component: console, state, bytes, database values, timers, groups', { skip }, async () => {
  const host = probeHost();
  const comm = await probeConnection(host);
  await comm.sendJsonTo({ op: 'log', arg: 'hello' });
  assert.deepEqual(comm.logs.at(-1), { level: 'info', message: 'logged hello' });
  for (let i = 1; i <= 3; i++) {
    await comm.sendJsonTo({ op: 'count' });
    assert.deepEqual(await comm.receiveJsonFrom(), { count: i });
  }
  assert.deepEqual(comm.state, { count: 3 });
  await comm.sendJsonTo({ op: 'bytes', arg: [0, 255, 7] });
  assert.deepEqual(await comm.receiveFrom(), new Uint8Array([0, 255, 7]));
  await comm.sendJsonTo({ op: 'db', arg: 42 });
  assert.deepEqual(await comm.receiveJsonFrom(), { row: { id: 1, n: 42, big: 2 ** 40, flag: 1 }, rows: [{ n: 42 }] });
  await comm.sendJsonTo({ op: 'timer' });
  assert.deepEqual(await comm.receiveJsonFrom(), { timer: 'fired' });
  const other = await probeConnection(host);
  await other.sendJsonTo({ op: 'group', arg: 'probe.pure' }); // joins, then sends a pure event
  assert.equal(await other.receiveFrom(), 'to all');
  await other.sendJsonTo({ op: 'group', arg: 'probe.unknown' });
  assert.ok(other.logs.some((l) => l.level === 'warn' && l.message.includes('no handler for event type "probe.unknown"')));
});

test('inside the component: an exception is logged with source positions, then traps (1011)', { skip }, async () => {
  const comm = await probeConnection();
  await comm.sendJsonTo({ op: 'throw', arg: 'on purpose' });
  assert.deepEqual(await comm.receiveOutput(), { type: 'websocket.close', code: 1011, reason: 'consumer error' });
  const [entry] = comm.logs.filter((l) => l.level === 'error');
  assert.match(entry.message, /^ProbeConsumer\.receive\(\) failed: Error: probe failed: on purpose\n/);
  // Frames name the project's files and lines, not the bundle's.
  assert.match(entry.message, /\n {2}fail@consumers\.js:\d+:\d+\n/);
  assert.doesNotMatch(entry.message, /initializer\.js/);
  assert.match(entry.message, /receiveJson@consumers\.js:\d+:\d+/);
  assert.match(comm.error.message, /unreachable|RuntimeError|trap/i);
});

test('a fresh instance for every event: nothing is kept in module globals', { skip }, () => {
  assert.ok(probe.component.instances.count > 10, `instances made: ${probe.component.instances.count}`);
});
