// The module-resolution hook behind register.mjs: `consumer-host-sdk` and its
// subpaths resolve through this folder's package.json exports.
import { readFileSync } from 'node:fs';

const NAME = 'consumer-host-sdk';
const ROOT = new URL('./', import.meta.url);
const EXPORTS = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')).exports;

export async function resolve(specifier, context, nextResolve) {
  if (specifier === NAME || specifier.startsWith(`${NAME}/`)) {
    const target = EXPORTS[`.${specifier.slice(NAME.length)}`];
    if (target) return { url: new URL(target, ROOT).href, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
