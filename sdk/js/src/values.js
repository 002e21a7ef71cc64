// JS values to and from the WIT `database.value` variant.
//
// The bindings represent an s64 as a BigInt; a consumer mostly wants numbers,
// so integers come back as numbers when they fit exactly and as BigInt when
// they do not.

/** A JS value as a WIT `value`. */
export function toValue(value, where) {
  if (value === null || value === undefined) return { tag: 'null' };
  switch (typeof value) {
    case 'boolean':
      return { tag: 'integer', val: value ? 1n : 0n };
    case 'bigint':
      return { tag: 'integer', val: value };
    case 'number':
      if (Number.isSafeInteger(value)) return { tag: 'integer', val: BigInt(value) };
      if (Number.isFinite(value)) return { tag: 'real', val: value };
      throw new TypeError(`${where} is ${value}, which SQLite cannot store`);
    case 'string':
      return { tag: 'text', val: value };
  }
  if (value instanceof Uint8Array) return { tag: 'blob', val: value };
  if (value instanceof ArrayBuffer) return { tag: 'blob', val: new Uint8Array(value) };
  if (value instanceof Date) return { tag: 'text', val: djangoDatetime(value) };
  throw new TypeError(
    `${where} is ${describe(value)}; use null, a boolean, a number, a bigint, a string, a Date or a Uint8Array`,
  );
}

/** A WIT `value` as a JS value. */
export function fromValue(value) {
  switch (value.tag) {
    case 'null':
      return null;
    case 'integer': {
      const big = BigInt(value.val);
      return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER)
        ? Number(big)
        : big;
    }
    case 'real':
    case 'text':
      return value.val;
    case 'blob':
      return value.val instanceof Uint8Array ? value.val : Uint8Array.from(value.val);
    default:
      throw new TypeError(`unknown database value ${JSON.stringify(value.tag)}`);
  }
}

/** A row given as an object, as the (column, value) pairs `db-insert` takes. */
export function toRow(table, row) {
  if (row === null || typeof row !== 'object' || Array.isArray(row)) {
    throw new TypeError(`db.insert(${JSON.stringify(table)}, row): row must be an object of column values`);
  }
  return Object.entries(row)
    .filter(([, value]) => value !== undefined) // an absent column lets the host fill it
    .map(([column, value]) => [column, toValue(value, `${table}.${column}`)]);
}

/** (column, value) pairs as an object. */
export function fromRow(pairs) {
  const row = {};
  for (const [column, value] of pairs) row[column] = fromValue(value);
  return row;
}

/** A UTC datetime as Django stores it in SQLite: `YYYY-MM-DD HH:MM:SS.ffffff`. */
export function djangoDatetime(date) {
  const iso = date.toISOString(); // 2026-11-25T17:22:22.535Z
  return `${iso.slice(0, 10)} ${iso.slice(11, 23)}000`;
}

function describe(value) {
  if (Array.isArray(value)) return 'an array';
  return `a ${value?.constructor?.name ?? typeof value}`;
}
