// The project template, as `consumer-host new NAME --lang js` would make it:
// it must pass its own tests as generated, and build.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebsocketCommunicator, FakeHost } from 'consumer-host-sdk/testing';
import { SDK_DIR, loadComponent, runBuild, toolchain, witDir } from './support/component.js';

const made = [];
after(() => Promise.all(made.map((dir) => rm(dir, { recursive: true, force: true }))));

/** Renders the template into a new folder, `{{name}}` replaced. */
async function render(name) {
  const parent = await mkdtemp(join(tmpdir(), 'consumer-host-new-'));
  made.push(parent);
  const dir = join(parent, name);
  await cp(join(SDK_DIR, 'template'), dir, { recursive: true });
  for (const file of await readdir(dir)) {
    const path = join(dir, file);
    await writeFile(path, (await readFile(path, 'utf8')).replaceAll('{{name}}', name));
  }
  return dir;
}

function run(args, cwd) {
  // Without the parent runner's NODE_TEST_CONTEXT, the child reports in TAP as a user's run would.
  const { NODE_TEST_CONTEXT, ...env } = process.env;
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd, env }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
  });
}

function passed(output) {
  const pass = Number(/^# pass (\d+)/m.exec(output)?.[1] ?? 0);
  const fail = Number(/^# fail (\d+)/m.exec(output)?.[1] ?? -1);
  return pass > 0 && fail === 0;
}

test('the rendered template names the project and has no placeholder left', async () => {
  const dir = await render('my-room');
  for (const file of await readdir(dir)) {
    assert.doesNotMatch(await readFile(join(dir, file), 'utf8'), /\{\{/, file);
  }
  assert.match(await readFile(join(dir, 'consumer.toml'), 'utf8'), /^name = "my-room"$/m);
  assert.match(await readFile(join(dir, 'consumer.toml'), 'utf8'), /^lang = "js"$/m);
  assert.equal(JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')).name, 'my-room');
});

test('its tests pass as generated, with the SDK linked into node_modules', async () => {
  const dir = await render('linked-room');
  await mkdir(join(dir, 'node_modules'));
  await symlink(SDK_DIR, join(dir, 'node_modules', 'consumer-host-sdk'), 'dir');
  const result = await run(['--test'], dir);
  assert.equal(result.code, 0, result.stdout + result.stderr);
  assert.ok(passed(result.stdout), result.stdout);
});

test('its tests pass as generated, with the SDK found through register.mjs', async () => {
  const dir = await render('hooked-room');
  const result = await run(['--import', join(SDK_DIR, 'register.mjs'), '--test'], dir);
  assert.equal(result.code, 0, result.stdout + result.stderr);
  assert.ok(passed(result.stdout), result.stdout);
});

const skip = !toolchain() || !witDir() ? 'no toolchain or WIT 0.2 (see support/component.js)' : false;

test('it builds into a component that serves the room', { skip }, async () => {
  const dir = await render('built-room');
  const toml = await readFile(join(dir, 'consumer.toml'), 'utf8');
  const entry = /^entry = "(.+)"$/m.exec(toml)[1];
  const out = join(dir, 'built-room.wasm');
  const result = await runBuild(['--entry', entry, '--project', dir, '--wit', witDir(), '-o', out]);
  assert.equal(result.code, 0, result.stderr);

  const component = await loadComponent(out);
  const host = new FakeHost();
  const [ann, bob] = ['Ann', 'Bob'].map((name) => new WebsocketCommunicator(component, '/ws/red/', { host, route: 'ws/<room>/', user: { id: name.padEnd(32, '0'), name } }));
  await ann.connect();
  await bob.connect();
  await bob.sendJsonTo({ text: 'from the component' });
  assert.deepEqual(await ann.receiveJsonFrom(), { text: 'from the component', from: 'Bob' });
});
