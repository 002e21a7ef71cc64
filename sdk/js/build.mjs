#!/usr/bin/env node
// Builds a JavaScript consumer project into a consumer-host component.
//
//   node build.mjs --entry consumers.js:ChatConsumer --project DIR --wit DIR -o out.wasm
//                  [--node-modules DIR] [--world consumer] [--no-wasi] [--keep-work-dir]
//
// Steps:
//   1. write a glue entry module that exports `handler = defineConsumer(Entry, componentHost)`;
//   2. bundle it with esbuild into one ES module (componentize-js resolves
//      only relative imports inside one folder: no bare package names, no
//      node_modules), keeping the WIT imports (`consumer-host:consumer/...`)
//      external, and append its source map so stack traces in the host log
//      name the project's files;
//   3. componentize-js: SpiderMonkey plus the bundle, pre-initialised with
//      wizer, as a component of the WIT world;
//   4. write the component atomically (a temporary file renamed into place).
//
// The toolchain (@bytecodealliance/componentize-js 0.23 and esbuild) is
// loaded from --node-modules, else $CONSUMER_HOST_JS_TOOLCHAIN, else the
// project's or this SDK's node_modules. Exit status: 0 built, 1 failed, 2
// bad arguments. Progress goes to stderr; nothing but errors when it fails.

import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mapPositions } from './src/log.js';

const SDK_DIR = dirname(fileURLToPath(import.meta.url));
const SDK_NAME = 'consumer-host-sdk';
const DEFAULT_WORLD = 'consumer';
// Engine features left out: http and fetch-event need wasi:http, which the
// host does not link; stdio would print to a stderr nobody reads (the SDK
// logs through the host instead). Clocks and random stay, so Date.now(),
// timers, Math.random() and crypto work at run time.
const DISABLED_FEATURES = ['stdio', 'http', 'fetch-event'];
const NO_WASI_FEATURES = ['stdio', 'random', 'clocks', 'http', 'fetch-event'];
const BUNDLE_NAME = 'consumer.js';

class UsageError extends Error {}

const USAGE = `usage: node build.mjs --entry FILE:EXPORT --project DIR --wit DIR -o OUT.wasm
                      [--node-modules DIR] [--world NAME] [--no-wasi] [--keep-work-dir]

  --entry FILE:EXPORT  the module (relative to --project) and its exported consumer class
  --project DIR        the consumer project folder
  --wit DIR            the WIT folder (or file) of consumer-host:consumer@0.2.0
  -o, --out FILE       where to write the component
  --node-modules DIR   a node_modules holding @bytecodealliance/componentize-js and esbuild
  --world NAME         the world to build (default: ${DEFAULT_WORLD})
  --no-wasi            import no WASI at all: Date.now() is then frozen at build time,
                       Math.random() is the same sequence in every instance, timers trap
  --keep-work-dir      keep the bundle and glue for inspection`;

function parseArgs(argv) {
  const opts = { world: DEFAULT_WORLD, noWasi: false, keepWorkDir: false };
  const valued = { '--entry': 'entry', '--project': 'project', '--wit': 'wit', '-o': 'out', '--out': 'out', '--node-modules': 'nodeModules', '--world': 'world' };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    if (arg.startsWith('--') && arg.includes('=')) [arg, value] = [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)];
    if (arg === '-h' || arg === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (arg === '--no-wasi') opts.noWasi = true;
    else if (arg === '--keep-work-dir') opts.keepWorkDir = true;
    else if (valued[arg]) {
      value ??= argv[++i];
      if (value === undefined) throw new UsageError(`${arg} needs a value`);
      opts[valued[arg]] = value;
    } else throw new UsageError(`unknown argument ${JSON.stringify(arg)}`);
  }
  for (const [flag, key] of [['--entry', 'entry'], ['--project', 'project'], ['--wit', 'wit'], ['-o', 'out']]) {
    if (!opts[key]) throw new UsageError(`${flag} is required`);
  }
  const colon = opts.entry.lastIndexOf(':');
  if (colon <= 0 || colon === opts.entry.length - 1) throw new UsageError(`--entry must be FILE:EXPORT, e.g. consumers.js:ChatConsumer (got ${JSON.stringify(opts.entry)})`);
  opts.entryFile = opts.entry.slice(0, colon);
  opts.entryExport = opts.entry.slice(colon + 1);
  if (!/^[A-Za-z_$][\w$]*$/.test(opts.entryExport)) throw new UsageError(`--entry: ${JSON.stringify(opts.entryExport)} is not an export name`);
  opts.project = resolve(opts.project);
  opts.wit = resolve(opts.wit);
  opts.out = resolve(opts.out);
  return opts;
}

const started = Date.now();
function progress(text) {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}\n`);
}

// Imports a package from a node_modules folder by reading its package.json,
// since an ES module cannot be resolved from an arbitrary folder otherwise.
async function importFrom(nodeModules, name) {
  const dir = join(nodeModules, ...name.split('/'));
  const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8'));
  let target = pkg.exports?.['.'] ?? pkg.exports;
  while (target && typeof target === 'object') target = target.import ?? target.node ?? target.default ?? target.require;
  target ??= pkg.module ?? pkg.main ?? 'index.js';
  return import(pathToFileURL(join(dir, target)).href);
}

async function loadToolchain(opts) {
  // An explicit --node-modules is the only place looked at.
  const candidates = (opts.nodeModules ? [opts.nodeModules] : [process.env.CONSUMER_HOST_JS_TOOLCHAIN, join(opts.project, 'node_modules'), join(SDK_DIR, 'node_modules')])
    .filter(Boolean)
    .map((dir) => resolve(dir));
  const found = candidates.find((dir) => existsSync(join(dir, '@bytecodealliance', 'componentize-js', 'package.json')) && existsSync(join(dir, 'esbuild', 'package.json')));
  if (!found) {
    throw new Error(
      `the JavaScript toolchain is missing (looked in ${candidates.join(', ')}).\n` +
        `Install it with: npm install --prefix DIR @bytecodealliance/componentize-js@0.23.0 esbuild@0.28.2\n` +
        `then pass --node-modules DIR/node_modules`,
    );
  }
  const [componentizeJs, esbuild] = await Promise.all([importFrom(found, '@bytecodealliance/componentize-js'), importFrom(found, 'esbuild')]);
  return { componentize: componentizeJs.componentize, componentizeVersion: componentizeJs.version, esbuild: esbuild.default ?? esbuild, nodeModules: found };
}

// `consumer-host-sdk` and its subpaths always resolve to this SDK, whatever
// the project has installed: the glue and the consumer class must share one
// copy of the SDK's classes.
function sdkPlugin(sdkExports) {
  return {
    name: 'consumer-host-sdk',
    setup(build) {
      build.onResolve({ filter: /^consumer-host-sdk(\/.*)?$/ }, (args) => {
        const subpath = `.${args.path.slice(SDK_NAME.length)}`;
        const target = sdkExports[subpath];
        if (!target) return { errors: [{ text: `${SDK_NAME} has no export ${JSON.stringify(subpath)}` }] };
        return { path: join(SDK_DIR, target) };
      });
    },
  };
}

async function bundle(esbuild, opts, workDir) {
  const entryPath = resolve(opts.project, opts.entryFile);
  if (!existsSync(entryPath)) throw new Error(`the entry module ${entryPath} does not exist (from --entry ${opts.entry})`);
  const importLine =
    opts.entryExport === 'default'
      ? `import ConsumerClass from ${JSON.stringify(entryPath)};`
      : `import { ${opts.entryExport} as ConsumerClass } from ${JSON.stringify(entryPath)};`;
  const gluePath = join(workDir, 'entry.js');
  await writeFile(
    gluePath,
    `// Generated by consumer-host-sdk/build.mjs: the component's exported handler.\n` +
      `import { defineConsumer } from 'consumer-host-sdk';\n` +
      `import { componentHost } from 'consumer-host-sdk/host/component';\n` +
      `${importLine}\n` +
      `export const handler = defineConsumer(ConsumerClass, componentHost);\n`,
  );
  const sdkExports = JSON.parse(await readFile(join(SDK_DIR, 'package.json'), 'utf8')).exports;
  let result;
  try {
    result = await esbuild.build({
      entryPoints: [gluePath],
      outfile: join(workDir, BUNDLE_NAME),
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'neutral',
      // StarlingMonkey is a web-worker-like runtime: no Node built-ins.
      mainFields: ['module', 'main'],
      conditions: ['worker', 'browser'],
      target: 'es2022',
      sourcemap: 'external',
      keepNames: true,
      legalComments: 'none',
      external: ['consumer-host:*'],
      plugins: [sdkPlugin(sdkExports)],
      absWorkingDir: opts.project,
      logLevel: 'silent',
    });
  } catch (err) {
    const messages = (err.errors ?? []).map((e) => {
      // An error in the generated glue is about --entry.
      if (e.location?.file.endsWith('entry.js') && /No matching export/.test(e.text)) {
        return `${opts.entryFile} has no export named ${JSON.stringify(opts.entryExport)} (from --entry ${opts.entry})`;
      }
      return e.location ? `${e.location.file}:${e.location.line}:${e.location.column}: ${e.text}` : e.text;
    });
    throw new Error(`bundling failed:\n  ${messages.join('\n  ') || err.message}`);
  }
  const code = result.outputFiles.find((f) => f.path.endsWith('.js')).text;
  const map = JSON.parse(result.outputFiles.find((f) => f.path.endsWith('.map')).text);
  // Sources named from the project (or as SDK/package paths) for stack traces.
  const sources = map.sources.map((source) => {
    const abs = resolve(workDir, source);
    if (abs.startsWith(opts.project + sep)) return relative(opts.project, abs);
    if (abs.startsWith(SDK_DIR + sep)) return `${SDK_NAME}/${relative(SDK_DIR, abs)}`;
    return source;
  });
  const sourceMap = { file: BUNDLE_NAME, sources, mappings: map.mappings };
  const bundlePath = join(workDir, BUNDLE_NAME);
  // Appended after the code, so the mapped lines stay where they are.
  await writeFile(bundlePath, `${code}\nglobalThis[Symbol.for('consumer-host.sourcemap')] = ${JSON.stringify(sourceMap)};\n`);
  return { bundlePath, sourceMap };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!(await stat(opts.project).catch(() => null))?.isDirectory()) throw new UsageError(`--project ${opts.project} is not a folder`);
  if (!existsSync(opts.wit)) throw new UsageError(`--wit ${opts.wit} does not exist`);
  if (!existsSync(dirname(opts.out))) throw new UsageError(`the output folder ${dirname(opts.out)} does not exist`);

  const toolchain = await loadToolchain(opts);
  progress(`toolchain: componentize-js ${toolchain.componentizeVersion}, esbuild ${toolchain.esbuild.version} (${toolchain.nodeModules})`);
  const workDir = await mkdtemp(join(tmpdir(), 'consumer-host-js-'));
  try {
    progress(`bundling ${opts.entry}`);
    const { bundlePath, sourceMap } = await bundle(toolchain.esbuild, opts, workDir);
    progress(`componentizing (SpiderMonkey + your code, pre-initialised; about 10-20 s)`);
    // componentize-js maps the source's folder as the guest's root when the
    // source is not under the current directory; run from the work folder so
    // the bundle is `consumer.js` there, as the embedded source map says.
    const cwd = process.cwd();
    process.chdir(workDir);
    let component;
    try {
      ({ component } = await toolchain.componentize({
        sourcePath: bundlePath,
        witPath: opts.wit,
        worldName: opts.world,
        disableFeatures: opts.noWasi ? NO_WASI_FEATURES : DISABLED_FEATURES,
      }));
    } catch (err) {
      // Most often the module's top level threw: it runs at build time, in wizer.
      const text = mapPositions(err.message, sourceMap).replace(
        /^Failed to initialize component \(wizer \([^)]*\)\):\n/,
        'the module failed while it was pre-initialised (its top level runs at build time):\n',
      );
      throw new Error(`componentize-js failed: ${text}`);
    } finally {
      process.chdir(cwd);
    }
    const temporary = `${opts.out}.tmp-${process.pid}`;
    await writeFile(temporary, component);
    await rename(temporary, opts.out);
    progress(`wrote ${opts.out} (${(component.length / 1e6).toFixed(1)} MB)`);
  } finally {
    if (opts.keepWorkDir) progress(`work folder kept: ${workDir}`);
    else await rm(workDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  if (err instanceof UsageError) {
    console.error(`error: ${err.message}\n\n${USAGE}`);
    process.exit(2);
  }
  console.error(`error: ${err.message}`);
  process.exit(1);
});
