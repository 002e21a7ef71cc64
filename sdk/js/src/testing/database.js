// A small in-memory database for tests, speaking the WIT `database`
// interface the way the host does.
//
// Why not SQLite: Node 20 has no built-in sqlite and a native module would
// make every consumer project install and compile one just to run its
// tests. Instead this store keeps declared tables, inserts the way the host
// does (filling a missing char(32) primary key and NOT NULL datetime,
// normalising UUIDs, checking NOT NULL, UNIQUE and foreign keys, grants),
// and answers the plain SELECTs consumers mostly run:
//
//   SELECT *|col, ...|COUNT(*) FROM table
//     [WHERE col op value [AND ...]] [ORDER BY col [ASC|DESC], ...] [LIMIT n]
//
// where op is = != <> < <= > >= or IS [NOT] NULL, and value is ?N, ?, a
// quoted string or a number. Anything else is refused as `invalid`, unless
// the test answers it with db.onQuery(sql or RegExp, (params, db) => rows).

import { djangoDatetime, fromValue, toValue } from '../values.js';

export class FakeDatabase {
  #tables = new Map();
  #handlers = [];
  #grants;

  /**
   * @param options.read tables `db.query` may read (with those of `write`); all when omitted
   * @param options.write tables `db.insert` may write; all when omitted
   */
  constructor({ read, write } = {}) {
    if (read !== undefined || write !== undefined) {
      this.#grants = { read: new Set([...(read ?? []), ...(write ?? [])]), write: new Set(write ?? []) };
    }
  }

  /**
   * Declares a table. `columns` maps each column to its SQL definition, e.g.
   * `{ id: 'char(32) NOT NULL PRIMARY KEY', body: 'text NOT NULL',
   *    created_at: 'datetime NOT NULL', user_id: 'char(32) REFERENCES users_user' }`.
   */
  createTable(name, columns) {
    const defs = Object.entries(columns).map(([column, definition]) => parseColumn(column, definition));
    this.#tables.set(name, { name, columns: defs, rows: [], nextRowId: 1 });
    return this;
  }

  /** Adds rows (objects of JS values) as the host would insert them, grants aside. */
  seed(table, rows) {
    return rows.map((row) => this.#insert(table, Object.entries(row).map(([k, v]) => [k, toValue(v, `${table}.${k}`)]), true));
  }

  /** Deletes the rows for which `predicate(row)` is true; returns how many. */
  remove(table, predicate) {
    const store = this.#table(table);
    const before = store.rows.length;
    store.rows = store.rows.filter((row) => !predicate({ ...row }));
    return before - store.rows.length;
  }

  /** The rows of a table as objects of JS values, for assertions. */
  rows(table) {
    return this.#table(table).rows.map((row) => ({ ...row }));
  }

  /** Answers statements the built-in SELECT subset does not (or overrides it): `fn(params, db)` returns row objects. */
  onQuery(matcher, fn) {
    this.#handlers.push({ matcher, fn });
    return this;
  }

  // ---- The WIT interface (what the fake host's db-insert and db-query call) ----

  /** `db-insert`: (column, value) pairs in; the row as written, as pairs. Throws `{ payload }` as the bindings do. */
  dbInsert(table, pairs) {
    return this.#insert(table, pairs, false);
  }

  /** `db-query`: sql and WIT values in; `{ columns, rows }` of WIT values out. */
  dbQuery(sql, params) {
    const args = params.map(fromValue);
    const normalised = sql.trim().replace(/\s+/g, ' ');
    for (const { matcher, fn } of this.#handlers) {
      const hit = typeof matcher === 'string' ? matcher.trim().replace(/\s+/g, ' ') === normalised : matcher.test(sql);
      if (hit) return asResult(fn(args, this));
    }
    if (!/^\s*(select|with)\b/i.test(sql)) fail('invalid', 'not a read-only statement: only SELECT may be run');
    const query = parseSelect(sql);
    const table = this.#table(query.table);
    this.#check('read', table.name);
    const needed = query.placeholders;
    if (needed !== args.length) {
      fail('invalid', `wrong number of parameters: the statement takes ${needed}, ${args.length} given`);
    }
    for (const column of [...query.where.map((c) => c.column), ...query.order.map((o) => o.column), ...(query.columns ?? [])]) {
      if (!table.columns.some((c) => c.name === column)) fail('no-such-table', `no such column: ${column}`);
    }
    let rows = table.rows.filter((row) => query.where.every((cond) => matches(row[cond.column], cond, args)));
    for (const { column, desc } of [...query.order].reverse()) {
      rows = [...rows].sort((a, b) => (desc ? -1 : 1) * compare(a[column], b[column]));
    }
    if (query.limit !== undefined) rows = rows.slice(0, query.limit);
    if (query.count) return { columns: ['COUNT(*)'], rows: [[toValue(rows.length)]] };
    const columns = query.columns ?? table.columns.map((c) => c.name);
    return { columns, rows: rows.map((row) => columns.map((c) => toValue(row[c], c))) };
  }

  // ---- internals ----

  #table(name) {
    const table = this.#tables.get(name);
    if (!table) fail('no-such-table', `no table ${JSON.stringify(name)}`);
    return table;
  }

  #check(access, table) {
    if (!this.#grants) return;
    if (!this.#grants[access].has(table)) fail('access-denied', `${access} access to ${JSON.stringify(table)} is not granted`);
  }

  #insert(tableName, pairs, trusted) {
    const table = this.#table(tableName);
    if (!trusted) this.#check('write', table.name);
    const row = {};
    for (const [name, value] of pairs) {
      const column = table.columns.find((c) => c.name === name);
      if (!column) fail('no-such-table', `table ${JSON.stringify(table.name)} has no column ${JSON.stringify(name)}`);
      if (name in row) fail('invalid', `column ${JSON.stringify(name)} given twice`);
      let js = fromValue(value);
      if (column.uuid && typeof js === 'string') js = normaliseUuid(js) ?? js;
      row[name] = js;
    }
    if (Object.keys(row).length === 0) fail('invalid', 'a row needs at least one column');
    for (const column of table.columns) {
      if (column.name in row) continue;
      if (column.primaryKey && column.uuid) row[column.name] = uuid7Hex();
      else if (column.datetime && column.notNull && column.default === undefined) row[column.name] = djangoDatetime(new Date());
      else if (column.primaryKey && column.type === 'integer') row[column.name] = table.nextRowId;
      else row[column.name] = column.default ?? null;
    }
    for (const column of table.columns) {
      const value = row[column.name];
      if (value === null && (column.notNull || column.primaryKey)) {
        fail('constraint', `NOT NULL constraint failed: ${table.name}.${column.name}`);
      }
      if ((column.unique || column.primaryKey) && value !== null && table.rows.some((r) => compare(r[column.name], value) === 0)) {
        fail('constraint', `UNIQUE constraint failed: ${table.name}.${column.name}`);
      }
      if (column.references && value !== null) {
        const parent = this.#tables.get(column.references);
        const key = parent?.columns.find((c) => c.primaryKey)?.name;
        if (parent && key && !parent.rows.some((r) => compare(r[key], value) === 0)) {
          fail('constraint', `${table.name}.${column.name} names no row of ${parent.name}`);
        }
      }
    }
    const rowId = row[table.columns.find((c) => c.primaryKey && c.type === 'integer')?.name];
    table.nextRowId = Math.max(table.nextRowId, typeof rowId === 'number' ? rowId : 0) + 1;
    table.rows.push(row);
    return table.columns.map((column) => [column.name, toValue(row[column.name], column.name)]);
  }
}

// A result error as the component bindings throw it.
function fail(tag, val) {
  const err = new Error(`${tag}: ${val}`);
  err.payload = { tag, val };
  throw err;
}

function asResult(rows) {
  if (rows && !Array.isArray(rows) && Array.isArray(rows.columns)) {
    return { columns: rows.columns, rows: rows.rows.map((row) => row.map((v, i) => toValue(v, rows.columns[i]))) };
  }
  const columns = rows.length > 0 ? Object.keys(rows[0]) : [];
  return { columns, rows: rows.map((row) => columns.map((c) => toValue(row[c], c))) };
}

function parseColumn(name, definition) {
  const text = definition.toLowerCase();
  const type = text.split(/\s+/)[0];
  const defaultMatch = /\bdefault\s+('(?:[^']|'')*'|-?\d+(?:\.\d+)?|null)/.exec(text);
  let def;
  if (defaultMatch) {
    const literal = /\bdefault\s+('(?:[^']|'')*'|-?\d+(?:\.\d+)?|null)/i.exec(definition)[1];
    def = literal.startsWith("'") ? literal.slice(1, -1).replaceAll("''", "'") : literal.toLowerCase() === 'null' ? null : Number(literal);
  }
  return {
    name,
    type,
    uuid: type === 'char(32)',
    datetime: type.startsWith('datetime'),
    notNull: /\bnot\s+null\b/.test(text),
    primaryKey: /\bprimary\s+key\b/.test(text),
    unique: /\bunique\b/.test(text),
    default: def,
    references: /\breferences\s+"?([a-z0-9_]+)"?/.exec(text)?.[1],
  };
}

// ---- the SELECT subset ----

const TOKEN = /\s*(?:(\?\d*)|'((?:[^']|'')*)'|(-?\d+(?:\.\d+)?)|"([^"]+)"|([A-Za-z_][A-Za-z0-9_]*)|(<>|!=|<=|>=|=|<|>|\(\*\)|\*|,|\.))/y;

function tokenize(sql) {
  const tokens = [];
  const text = sql.trim().replace(/;\s*$/, '');
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < text.length) {
    const at = TOKEN.lastIndex;
    const m = TOKEN.exec(text);
    if (!m) unsupported(`cannot read ${JSON.stringify(text.slice(at, at + 20))}`);
    if (m[1] !== undefined) tokens.push({ kind: 'param', text: m[1] });
    else if (m[2] !== undefined) tokens.push({ kind: 'value', value: m[2].replaceAll("''", "'") });
    else if (m[3] !== undefined) tokens.push({ kind: 'value', value: Number(m[3]) });
    else if (m[4] !== undefined) tokens.push({ kind: 'ident', text: m[4] });
    else if (m[5] !== undefined) tokens.push({ kind: 'word', text: m[5], upper: m[5].toUpperCase() });
    else tokens.push({ kind: 'op', text: m[6] });
  }
  return tokens;
}

function unsupported(why) {
  fail('invalid', `the fake database does not understand this statement (${why}); answer it in the test with db.onQuery(sql, (params, db) => rows)`);
}

function parseSelect(sql) {
  const tokens = tokenize(sql);
  let i = 0;
  const peek = () => tokens[i];
  const isWord = (word) => peek()?.kind === 'word' && peek().upper === word;
  const expectWord = (word) => {
    if (!isWord(word)) unsupported(`expected ${word}`);
    i++;
  };
  const identifier = () => {
    const token = tokens[i++];
    if (token?.kind === 'ident' || (token?.kind === 'word' && !KEYWORDS.has(token.upper))) return token.text;
    unsupported('expected a column or table name');
  };
  let nextPositional = 1;
  let highest = 0;
  const operand = () => {
    const token = tokens[i++];
    if (token?.kind === 'value') return { value: token.value };
    if (token?.kind === 'param') {
      const index = token.text === '?' ? nextPositional++ : Number(token.text.slice(1));
      highest = Math.max(highest, index);
      return { param: index - 1 };
    }
    unsupported('expected ?N, a quoted string or a number');
  };

  expectWord('SELECT');
  const query = { where: [], order: [], columns: undefined, count: false };
  if (peek()?.kind === 'op' && peek().text === '*') {
    i++;
  } else if (isWord('COUNT') && tokens[i + 1]?.text === '(*)') {
    i += 2;
    query.count = true;
  } else {
    query.columns = [identifier()];
    while (peek()?.text === ',') {
      i++;
      query.columns.push(identifier());
    }
  }
  expectWord('FROM');
  query.table = identifier();
  if (isWord('WHERE')) {
    i++;
    do {
      if (isWord('AND')) i++;
      const column = identifier();
      if (isWord('IS')) {
        i++;
        const not = isWord('NOT');
        if (not) i++;
        expectWord('NULL');
        query.where.push({ column, op: not ? 'is not null' : 'is null' });
      } else {
        const op = tokens[i++];
        if (op?.kind !== 'op' || !['=', '!=', '<>', '<', '<=', '>', '>='].includes(op.text)) unsupported('expected a comparison');
        query.where.push({ column, op: op.text, ...operand() });
      }
    } while (isWord('AND'));
  }
  if (isWord('ORDER')) {
    i++;
    expectWord('BY');
    do {
      if (peek()?.text === ',') i++;
      const column = identifier();
      let desc = false;
      if (isWord('ASC')) i++;
      else if (isWord('DESC')) {
        i++;
        desc = true;
      }
      query.order.push({ column, desc });
    } while (peek()?.text === ',');
  }
  if (isWord('LIMIT')) {
    i++;
    const limit = operand();
    query.limit = limit.value;
    if (typeof query.limit !== 'number') unsupported('LIMIT takes a number');
  }
  if (i < tokens.length) unsupported(`unexpected ${JSON.stringify(tokens[i].text ?? tokens[i].value)}`);
  query.placeholders = highest;
  return query;
}

const KEYWORDS = new Set(['SELECT', 'FROM', 'WHERE', 'AND', 'OR', 'ORDER', 'BY', 'LIMIT', 'IS', 'NOT', 'NULL', 'ASC', 'DESC', 'JOIN', 'GROUP']);

function matches(value, cond, args) {
  if (cond.op === 'is null') return value === null;
  if (cond.op === 'is not null') return value !== null;
  const other = 'param' in cond ? args[cond.param] : cond.value;
  if (value === null || other === null) return false; // SQL: a comparison with NULL is never true
  const order = compare(value, other);
  switch (cond.op) {
    case '=':
      return order === 0;
    case '!=':
    case '<>':
      return order !== 0;
    case '<':
      return order < 0;
    case '<=':
      return order <= 0;
    case '>':
      return order > 0;
    default:
      return order >= 0;
  }
}

// SQLite's order across types: NULL, numbers, text, blobs.
function compare(a, b) {
  const rank = (v) => (v === null ? 0 : typeof v === 'number' || typeof v === 'bigint' ? 1 : typeof v === 'string' ? 2 : 3);
  if (rank(a) !== rank(b)) return rank(a) - rank(b);
  if (a === null) return 0;
  if (rank(a) === 1) return a < b ? -1 : a > b ? 1 : 0;
  if (rank(a) === 2) return a < b ? -1 : a > b ? 1 : 0;
  const x = Buffer.from(a);
  return x.compare(Buffer.from(b));
}

/** The 32-lowercase-hex form of a UUID in any usual spelling, or undefined. */
export function normaliseUuid(text) {
  let body = text.toLowerCase();
  if (body.startsWith('urn:uuid:')) body = body.slice(9);
  else if (body.startsWith('{') && body.endsWith('}')) body = body.slice(1, -1);
  if (/^[0-9a-f]{32}$/.test(body)) return body;
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(body)) return body.replaceAll('-', '');
  return undefined;
}

/** A time-ordered UUID (version 7) as 32 lowercase hex digits, like the host's keys. */
export function uuid7Hex() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
