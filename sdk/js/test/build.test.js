// build.mjs: its arguments, and how it reports a project that cannot be built.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBuild, toolchain, witDir } from './support/component.js';

const made = [];
after(() => Promise.all(made.map((dir) => rm(dir, { recursive: true, force: true }))));

async function project(files) {
  const dir = await mkdtemp(join(tmpdir(), 'consumer-host-build-'));
  made.push(dir);
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

const GOOD = `import { WebsocketConsumer } from 'consumer-host-sdk';\nexport class Echo extends WebsocketConsumer {\n  receive({ text }) {\n    this.send(text);\n  }\n}\n`;

test('bad arguments exit 2 with the usage', async () => {
  for (const args of [[], ['--entry', 'consumers.js', '--project', '.', '--wit', '.', '-o', 'x.wasm'], ['--frobnicate']]) {
    const result = await runBuild(args, { nodeModules: null });
    assert.equal(result.code, 2, JSON.stringify(args));
    assert.match(result.stderr, /^error: .*\n\nusage: node build\.mjs/);
  }
});

test('a missing toolchain says how to install it', async () => {
  const dir = await project({ 'consumers.js': GOOD });
  const result = await runBuild(['--entry', 'consumers.js:Echo', '--project', dir, '--wit', dir, '-o', join(dir, 'x.wasm')], { nodeModules: join(dir, 'nowhere') });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /toolchain is missing .*\n.*npm install --prefix DIR @bytecodealliance\/componentize-js@0\.23\.0 esbuild@/);
});

const skip = !toolchain() || !witDir() ? 'no toolchain or WIT 0.2 (see support/component.js)' : false;

test('mistakes in the project are reported with the file and line', { skip }, async () => {
  const cases = [
    [{ 'consumers.js': GOOD }, 'other.js:Echo', /the entry module .*other\.js does not exist/],
    [{ 'consumers.js': GOOD }, 'consumers.js:Nope', /consumers\.js has no export named "Nope"/],
    [{ 'consumers.js': 'export class Echo {\n  receive( {\n}\n' }, 'consumers.js:Echo', /consumers\.js:4:0: Expected "\)" but found end of file/],
    [{ 'consumers.js': "import { x } from 'left-pad-nonexistent';\nexport class Echo {}\n" }, 'consumers.js:Echo', /Could not resolve "left-pad-nonexistent"/],
  ];
  for (const [files, entry, expected] of cases) {
    const dir = await project(files);
    const result = await runBuild(['--entry', entry, '--project', dir, '--wit', witDir(), '-o', join(dir, 'out.wasm')]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, expected);
    assert.deepEqual((await readdir(dir)).filter((f) => f.includes('wasm')), [], 'nothing written');
  }
});

test('an exception at the top level fails the build and names the source line', { skip }, async () => {
  const dir = await project({
    'consumers.js': `import { WebsocketConsumer } from 'consumer-host-sdk';\nimport { settings } from './settings.js';\nexport class Echo extends WebsocketConsumer {}\n`,
    'settings.js': `export const settings = {};\nthrow new Error('no settings');\n`,
  });
  const result = await runBuild(['--entry', 'consumers.js:Echo', '--project', dir, '--wit', witDir(), '-o', join(dir, 'out.wasm')]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /its top level runs at build time/);
  assert.match(result.stderr, /settings\.js:2:\d+ Error: no settings/);
});

test('a class that is not a consumer is refused at build time', { skip }, async () => {
  const dir = await project({ 'consumers.js': 'export class Echo {}\n' });
  const result = await runBuild(['--entry', 'consumers.js:Echo', '--project', dir, '--wit', witDir(), '-o', join(dir, 'out.wasm')]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /ConsumerClass must extend WebsocketConsumer/);
});

test('a good project builds; the component replaces the output file whole', { skip }, async () => {
  const dir = await project({ 'consumers.js': GOOD });
  const out = join(dir, 'echo.wasm');
  await writeFile(out, 'old');
  const result = await runBuild(['--entry', 'consumers.js:Echo', '--project', dir, '--wit', witDir(), '-o', out]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /bundling consumers\.js:Echo\n.*componentizing.*\n.*wrote .*echo\.wasm \(\d+\.\d MB\)/);
  assert.deepEqual((await readdir(dir)).sort(), ['consumers.js', 'echo.wasm']);
});
