// The consumer's own properties, kept in the host's per-connection state blob.
//
// An instance may be replaced between any two events, so what a handler
// stores on `this` lives in the host: restored before each handler, written
// back after it when it changed. The blob is the properties as a JSON object.

import { StateTooLargeError, payloadOf } from './errors.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Reads the blob: `{ text, props }`, empty when there is none or it is not ours. */
export function loadState(host) {
  const blob = host.getState();
  if (blob === undefined || blob === null || blob.length === 0) return { text: undefined, props: {} };
  const text = decoder.decode(blob);
  try {
    const props = JSON.parse(text);
    if (props !== null && typeof props === 'object' && !Array.isArray(props)) return { text, props };
  } catch {
    // fall through: a blob another consumer (or version) wrote in its own format
  }
  host.log('warn', 'the connection state is not a JSON object of properties; starting from none');
  return { text: undefined, props: {} };
}

/**
 * Writes the consumer's own enumerable properties when they differ from
 * `previousText`. A property that JSON cannot carry faithfully is left out
 * with a warning naming it.
 */
export function saveState(host, consumer, previousText) {
  const props = {};
  for (const key of Object.keys(consumer)) {
    const value = consumer[key];
    if (value === undefined) continue; // unset: nothing to keep
    const problem = jsonProblem(value, `this.${key}`);
    if (problem) {
      host.log('warn', `not persisted: ${problem}; only JSON values (null, booleans, finite numbers, strings, arrays, plain objects) survive between events`);
      continue;
    }
    props[key] = value;
  }
  const text = JSON.stringify(props);
  if (text === previousText || (previousText === undefined && text === '{}')) return;
  const bytes = encoder.encode(text);
  try {
    host.setState(bytes);
  } catch (err) {
    throw new StateTooLargeError(bytes.length, payloadOf(err));
  }
}

// Why `value` would not come back the same from JSON, or null when it would.
function jsonProblem(value, path, ancestors = new Set()) {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return null;
  if (typeof value === 'number') return Number.isFinite(value) ? null : `${path} is ${value}`;
  if (typeof value !== 'object') return `${path} is a ${typeof value}`;
  if (ancestors.has(value)) return `${path} refers back to itself`;
  ancestors.add(value);
  try {
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const item = value[i];
        const problem = item === undefined ? `${path}[${i}] is undefined` : jsonProblem(item, `${path}[${i}]`, ancestors);
        if (problem) return problem;
      }
      return null;
    }
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      return `${path} is a ${value.constructor?.name ?? 'non-plain object'}`;
    }
    for (const [key, item] of Object.entries(value)) {
      if (item === undefined) continue; // JSON drops it, as an absent key reads the same
      const problem = jsonProblem(item, `${path}.${key}`, ancestors);
      if (problem) return problem;
    }
    return null;
  } finally {
    ancestors.delete(value);
  }
}
