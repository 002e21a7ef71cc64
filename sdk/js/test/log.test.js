// Log formatting and source-mapped stack frames.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatArgs, formatError } from '../src/log.js';

test('console-style formatting', () => {
  assert.equal(formatArgs(['a', 1, { b: [2] }, null, undefined]), 'a 1 {"b":[2]} null undefined');
  assert.equal(formatArgs(['%s is %d (%i) %f %j %o %%', 'x', '4', 4.7, 1.5, { a: 1 }, [1]]), 'x is 4 (4) 1.5 {"a":1} [1] %');
  assert.equal(formatArgs(['%s and %s', 'only one']), 'only one and %s');
  const circular = { name: 'loop' };
  circular.self = circular;
  assert.equal(formatArgs([circular, 5n, () => {}, new Map([['k', 1]])]), '{"name":"loop","self":"[Circular]"} 5 [Function anonymous] {"k":1}');
  assert.equal(formatArgs([]), '');
});

test('errors print name, message, frames and cause; non-errors say what was thrown', () => {
  const text = formatError(new TypeError('outer', { cause: new Error('inner') }));
  assert.match(text, /^TypeError: outer\n {2}at .*log\.test\.js/);
  assert.match(text, /\nCaused by: Error: inner\n/);
  assert.equal(formatError('just a string'), 'thrown value: "just a string"');
});

test('SpiderMonkey frames in the bundle map back to the source files', () => {
  const key = Symbol.for('consumer-host.sourcemap');
  // Generated line 1 maps to a.js line 1; line 2, column 4 onwards to b.js line 10, column 2.
  // Segments: [genCol, source, line, col] as base64 VLQ: AAAA = 0,0,0,0; "AAAA,ICSE" = col 4, source +1, line +9, col +2.
  globalThis[key] = { file: 'consumer.js', sources: ['a.js', 'b.js'], mappings: 'AAAA;AAAA,ICSE' };
  try {
    const err = new Error('boom');
    err.stack = 'receive@consumer.js:2:9\nexport_handler@initializer.js:1358:15\n';
    assert.equal(formatError(err), 'Error: boom\n  receive@b.js:10:3\n  export_handler@initializer.js:1358:15');
  } finally {
    delete globalThis[key];
  }
});
