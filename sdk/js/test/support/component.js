// Builds a consumer project with build.mjs and runs the component under
// Node (transpiled by jco), so the tests can drive the real component with
// the same fake host as the consumer classes.
//
// Needs the build toolchain: a node_modules with componentize-js, esbuild,
// jco and preview2-shim, named by $CONSUMER_HOST_JS_TOOLCHAIN or found in
// this SDK's node_modules. Without it, toolchain() returns undefined and the
// tests that need it are skipped.

import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BUILD = join(SDK_DIR, 'build.mjs');

/** The toolchain's node_modules, or undefined when it is not installed. */
export function toolchain() {
  const candidates = [process.env.CONSUMER_HOST_JS_TOOLCHAIN, join(SDK_DIR, 'node_modules')].filter(Boolean);
  return candidates.find((dir) => ['@bytecodealliance/componentize-js', '@bytecodealliance/jco', 'esbuild'].every((p) => existsSync(join(dir, p, 'package.json'))));
}

/** The WIT folder: the repository's wit/ when it is the 0.2 world, else $CONSUMER_HOST_WIT. */
export function witDir() {
  const candidates = [process.env.CONSUMER_HOST_WIT, join(SDK_DIR, '..', '..', 'wit')].filter(Boolean);
  return candidates.find((dir) => {
    try {
      return existsSync(dir) && /package consumer-host:consumer@0\.2\.0;/.test(readWit(dir));
    } catch {
      return false;
    }
  });
}

function readWit(dir) {
  if (statSync(dir).isFile()) return readFileSync(dir, 'utf8');
  return readdirSync(dir).filter((f) => f.endsWith('.wit')).map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');
}

/** Runs build.mjs; resolves `{ code, stdout, stderr, ms }` whatever the exit status. */
export function runBuild(args, { nodeModules = toolchain() } = {}) {
  const started = Date.now();
  const fullArgs = [BUILD, ...args, ...(nodeModules ? ['--node-modules', nodeModules] : [])];
  return new Promise((resolvePromise) => {
    execFile(process.execPath, fullArgs, { maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      resolvePromise({ code: err ? err.code ?? 1 : 0, stdout, stderr, ms: Date.now() - started });
    });
  });
}

async function importFrom(nodeModules, name, subpath = '.') {
  const dir = join(nodeModules, ...name.split('/'));
  const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8'));
  let target = subpath === '.' ? pkg.exports?.['.'] ?? pkg.exports : pkg.exports?.[subpath];
  while (target && typeof target === 'object') target = target.import ?? target.node ?? target.default;
  target ??= pkg.main;
  return import(pathToFileURL(join(dir, target)).href);
}

/**
 * Loads a built component for the fake host: `{ makeHandler(host) }`, where
 * every export call runs on a new instance of the component (as after an
 * eviction or a hot swap), its imports bound to `host`.
 */
export async function loadComponent(wasmPath, nodeModules = toolchain()) {
  const jco = await importFrom(nodeModules, '@bytecodealliance/jco');
  const shim = await importFrom(nodeModules, '@bytecodealliance/preview2-shim');
  const { files } = await jco.transpile(await readFile(wasmPath), { name: 'consumer', instantiation: 'sync', noTypescript: true, quiet: true });
  const dir = await mkdtemp(join(tmpdir(), 'consumer-host-jco-'));
  for (const [name, bytes] of Object.entries(files)) {
    await mkdir(dirname(join(dir, name)), { recursive: true });
    await writeFile(join(dir, name), bytes);
  }
  const { instantiate } = await import(pathToFileURL(join(dir, 'consumer.js')).href);
  await rm(dir, { recursive: true, force: true }); // imported and compiled: the files are done with
  const modules = new Map();
  for (const name of Object.keys(files).filter((f) => f.endsWith('.wasm'))) {
    modules.set(name, new WebAssembly.Module(files[name]));
  }
  // WASI from the preview2 shim, keyed as jco names imports: `wasi:clocks/wall-clock`.
  const wasi = {};
  for (const [pkg, interfaces] of Object.entries(shim)) {
    for (const [iface, impl] of Object.entries(interfaces)) {
      wasi[`wasi:${pkg}/${iface.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`] = impl;
    }
  }
  const instances = { count: 0 };
  function fresh(host) {
    instances.count += 1;
    const imports = {
      ...wasi,
      'consumer-host:consumer/connection': host,
      'consumer-host:consumer/groups': host,
      'consumer-host:consumer/database': host,
      'consumer-host:consumer/state': host,
      'consumer-host:consumer/logging': host,
      'consumer-host:consumer/types': {},
    };
    return instantiate((name) => modules.get(name), imports, (module, imported) => new WebAssembly.Instance(module, imported)).handler;
  }
  return {
    name: wasmPath,
    instances,
    makeHandler(host) {
      // Bound methods: the bindings call the imports as plain functions.
      const bound = {};
      for (const key of ['getScope', 'accept', 'send', 'close', 'groupAdd', 'groupDiscard', 'groupSend', 'dbInsert', 'dbQuery', 'getState', 'setState', 'log']) {
        if (typeof host[key] === 'function') bound[key] = host[key].bind(host);
      }
      return {
        describe: () => fresh(bound).describe(),
        connect: () => fresh(bound).connect(),
        receive: (message) => fresh(bound).receive(message),
        handleEvent: (event) => fresh(bound).handleEvent(event),
        disconnect: (code) => fresh(bound).disconnect(code),
      };
    },
  };
}
