// Logging: console.* routed to the host's `log` import while a handler runs,
// and errors formatted with their stack for the host log.

const LEVELS = {
  trace: 'trace',
  debug: 'debug',
  log: 'info',
  info: 'info',
  warn: 'warn',
  error: 'error',
};

/**
 * Points console.log/info/debug/trace/warn/error at `host.log` and returns a
 * function that puts the originals back. The glue does this around every
 * handler call, so the same code logs to the host inside the component and to
 * the fake host in tests, and the test runner's own console is left alone
 * between calls.
 */
export function routeConsole(host) {
  const target = globalThis.console;
  const saved = {};
  for (const [method, level] of Object.entries(LEVELS)) {
    saved[method] = target[method];
    target[method] = (...args) => {
      let message = formatArgs(args);
      if (method === 'trace') message += `\n${formatStack(new Error().stack, 1)}`;
      host.log(level, message);
    };
  }
  return () => Object.assign(target, saved);
}

/** console-style formatting: `%s %d %i %f %o %O %j %%` in a first string, then the rest spaced. */
export function formatArgs(args) {
  let rest = args;
  let head = '';
  if (typeof args[0] === 'string' && args[0].includes('%')) {
    let index = 1;
    head = args[0].replace(/%([sdifoOj%])/g, (match, spec) => {
      if (spec === '%') return '%';
      if (index >= args.length) return match;
      const value = args[index++];
      switch (spec) {
        case 's':
          return typeof value === 'string' ? value : inspect(value);
        case 'd':
        case 'i':
          return typeof value === 'bigint' ? `${value}` : `${spec === 'i' ? Math.trunc(Number(value)) : Number(value)}`;
        case 'f':
          return `${Number(value)}`;
        default:
          return inspect(value);
      }
    });
    rest = args.slice(index);
  } else if (args.length > 0) {
    head = typeof args[0] === 'string' ? args[0] : inspect(args[0]);
    rest = args.slice(1);
  }
  return [head, ...rest.map((value) => (typeof value === 'string' ? value : inspect(value)))].join(' ');
}

/** A readable one-value rendering: JSON where it can, never throwing. */
export function inspect(value) {
  if (value instanceof Error) return formatError(value);
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') return `[Function ${value.name || 'anonymous'}]`;
  if (typeof value === 'symbol' || typeof value === 'bigint') return String(value);
  const seen = new WeakSet();
  try {
    const text = JSON.stringify(value, (key, val) => {
      if (typeof val === 'bigint') return `${val}n`;
      if (typeof val === 'function') return `[Function ${val.name || 'anonymous'}]`;
      if (val instanceof Uint8Array) return `Uint8Array(${val.length})`;
      if (val instanceof Map) return Object.fromEntries(val);
      if (val instanceof Set) return [...val];
      if (val !== null && typeof val === 'object') {
        if (seen.has(val)) return '[Circular]';
        seen.add(val);
      }
      return val;
    });
    return text ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * `Name: message`, the stack (mapped back to source files when the build
 * embedded a source map), and any `cause` chain. V8 puts the message at the
 * top of `stack`, SpiderMonkey does not; both come out the same here.
 */
export function formatError(err) {
  if (!(err instanceof Error)) return `thrown value: ${inspect(err)}`;
  let text = `${err.name}: ${err.message}`;
  const frames = formatStack(typeof err.stack === 'string' ? err.stack : '', 0);
  if (frames) text += `\n${frames}`;
  if (err.cause !== undefined) text += `\nCaused by: ${formatError(err.cause)}`;
  return text;
}

function formatStack(stack, skip) {
  let lines = stack.split('\n');
  // V8 starts the stack with the message (maybe several lines); its frames start with "at ".
  const firstFrame = lines.findIndex((line) => /^\s+at /.test(line));
  if (firstFrame >= 0) lines = lines.slice(firstFrame);
  const frames = lines
    .map((line) => line.trim())
    // The last frame inside a component is componentize-js's export binding: noise.
    .filter((line) => line !== '' && !/\/sources\/initializer\.js:\d+/.test(line))
    .slice(skip)
    .map((line) => `  ${line}`)
    .join('\n');
  const map = globalThis[SOURCE_MAP];
  return map ? mapPositions(frames, map) : frames;
}

// ---- Source-mapped stack frames inside the component ----
//
// The build appends the bundle's source map (sources and mappings) under
// this symbol; a frame `fn@bundle.js:LINE:COL` then reads `fn@consumers.js:L:C`.
// Decoded only when an error is formatted, so it costs nothing otherwise.

const SOURCE_MAP = Symbol.for('consumer-host.sourcemap');

/**
 * Rewrites every `FILE:LINE:COL` of the bundle in `text` to the source
 * position the map gives (`map`: `{ file, sources, mappings }`). build.mjs
 * uses it on errors raised while the component is pre-initialised.
 */
export function mapPositions(text, map) {
  const pattern = new RegExp(`(?<![\\w./-])${escape(map.file)}:(\\d+):(\\d+)`, 'g');
  const wanted = new Set([...text.matchAll(pattern)].map((m) => Number(m[1]) - 1));
  if (wanted.size === 0) return text;
  const segments = segmentsOf(map.mappings, wanted);
  return text.replace(pattern, (match, l, c) => {
    const found = lookup(segments.get(Number(l) - 1), Number(c) - 1);
    return found ? `${map.sources[found[1]]}:${found[2] + 1}:${found[3] + 1}` : match;
  });
}

function escape(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// The segment covering `column`: the last one starting at or before it.
function lookup(segments, column) {
  if (!segments) return undefined;
  let best = segments[0];
  for (const segment of segments) {
    if (segment[0] <= column) best = segment;
    else break;
  }
  return best;
}

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const DIGITS = new Int8Array(128).fill(-1);
for (let i = 0; i < BASE64.length; i++) DIGITS[BASE64.charCodeAt(i)] = i;

/**
 * Decodes source map v3 "mappings" (lines split by `;`, segments by `,`,
 * each a run of base64 VLQ numbers relative to the previous segment) in one
 * pass, keeping only the segments `[column, source, line, column]` of the
 * `wanted` generated lines. It runs in the component's interpreter while an
 * error is reported, so it allocates nothing for the other lines.
 */
function segmentsOf(mappings, wanted) {
  const found = new Map();
  const last = Math.max(...wanted);
  const fields = [0, 0, 0, 0, 0];
  let line = 0;
  let count = 0;
  let value = 0;
  let shift = 0;
  let column = 0;
  let source = 0;
  let origLine = 0;
  let origColumn = 0;
  for (let i = 0; i <= mappings.length; i++) {
    const code = i < mappings.length ? mappings.charCodeAt(i) : 59;
    if (code === 44 || code === 59) {
      // ',' or ';' (or the end) closes a segment
      if (count > 0) {
        column += fields[0];
        if (count >= 4) {
          source += fields[1];
          origLine += fields[2];
          origColumn += fields[3];
          if (wanted.has(line)) {
            if (!found.has(line)) found.set(line, []);
            found.get(line).push([column, source, origLine, origColumn]);
          }
        }
      }
      count = 0;
      if (code === 59) {
        line += 1;
        column = 0;
        if (line > last) break;
      }
      continue;
    }
    const digit = DIGITS[code];
    value += (digit & 31) << shift;
    if (digit & 32) {
      shift += 5;
    } else {
      if (count < fields.length) fields[count] = value & 1 ? -(value >>> 1) : value >>> 1;
      count += 1;
      value = 0;
      shift = 0;
    }
  }
  return found;
}
