// The fake database: inserts as the host makes them, the SELECT subset, grants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeDatabase, normaliseUuid } from 'consumer-host-sdk/testing';

const v = (tag, val) => (val === undefined ? { tag } : { tag, val });
const rowOf = (pairs) => Object.fromEntries(pairs.map(([k, value]) => [k, value.val ?? null]));

function error(fn) {
  try {
    fn();
  } catch (err) {
    return err.payload;
  }
  assert.fail('expected a db-error');
}

function people() {
  const db = new FakeDatabase();
  db.createTable('team', { id: 'char(32) NOT NULL PRIMARY KEY', name: "varchar(10) NOT NULL DEFAULT 'x'" });
  db.createTable('person', {
    id: 'integer NOT NULL PRIMARY KEY AUTOINCREMENT',
    name: 'text NOT NULL',
    age: 'integer NULL',
    team_id: 'char(32) NULL REFERENCES "team" ("id")',
    email: 'text UNIQUE',
    joined: 'datetime NOT NULL',
  });
  const [team] = db.seed('team', [{ id: '22DE0F4F-C84E-47BE-889C-D61B856492BD' }]);
  db.seed('person', [
    { name: 'Ann', age: 31, team_id: '22de0f4fc84e47be889cd61b856492bd', email: 'ann@x' },
    { name: 'Bob', age: 25, email: 'bob@x' },
    { name: 'Cy', age: null },
  ]);
  return { db, team: rowOf(team) };
}

test('insert fills what the host fills and returns every column', () => {
  const { db, team } = people();
  assert.equal(team.id, '22de0f4fc84e47be889cd61b856492bd'); // a UUID in any spelling is stored as 32 hex digits
  assert.equal(team.name, 'x'); // the column default
  const row = rowOf(db.dbInsert('person', [['name', v('text', 'Dee')], ['team_id', v('text', '{22de0f4f-c84e-47be-889c-d61b856492bd}')]]));
  assert.equal(row.id, 4n); // integer primary key: the next rowid (s64 comes back as a BigInt, as from the bindings)
  assert.equal(row.team_id, team.id);
  assert.match(row.joined, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$/);
  assert.equal(row.age, null);
  const made = rowOf(db.dbInsert('team', [['name', v('text', 'y')]]));
  assert.match(made.id, /^[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}$/);
});

test('insert checks columns, NOT NULL, UNIQUE and foreign keys', () => {
  const { db } = people();
  assert.deepEqual(error(() => db.dbInsert('nope', [['a', v('null')]])), { tag: 'no-such-table', val: 'no table "nope"' });
  assert.equal(error(() => db.dbInsert('person', [['nick', v('text', 'x')]])).tag, 'no-such-table');
  assert.equal(error(() => db.dbInsert('person', [['age', v('integer', 1n)]])).val, 'NOT NULL constraint failed: person.name');
  assert.equal(error(() => db.dbInsert('person', [['name', v('text', 'E')], ['email', v('text', 'ann@x')]])).val, 'UNIQUE constraint failed: person.email');
  assert.equal(error(() => db.dbInsert('person', [['name', v('text', 'E')], ['team_id', v('text', 'f'.repeat(32))]])).tag, 'constraint');
  assert.equal(error(() => db.dbInsert('person', [['name', v('text', 'E')], ['name', v('text', 'F')]])).tag, 'invalid');
  assert.equal(error(() => db.dbInsert('person', [])).tag, 'invalid');
  assert.equal(db.rows('person').length, 3);
});

test('the SELECT subset', () => {
  const { db } = people();
  const q = (sql, params = []) => {
    const result = db.dbQuery(sql, params);
    return result.rows.map((row) => Object.fromEntries(row.map((value, i) => [result.columns[i], value.val ?? null])));
  };
  assert.deepEqual(q('SELECT name FROM person WHERE age > ?1 ORDER BY name DESC', [v('integer', 20n)]), [{ name: 'Bob' }, { name: 'Ann' }]);
  assert.deepEqual(q('select "name", age from person where age is null'), [{ name: 'Cy', age: null }]);
  assert.deepEqual(q("SELECT name FROM person WHERE email = 'bob@x' AND age = 25"), [{ name: 'Bob' }]);
  assert.deepEqual(q('SELECT name FROM person WHERE age IS NOT NULL ORDER BY age LIMIT 1'), [{ name: 'Bob' }]);
  assert.deepEqual(q('SELECT name FROM person WHERE name <> ? AND name != ?', [v('text', 'Ann'), v('text', 'Cy')]), [{ name: 'Bob' }]);
  assert.deepEqual(q('SELECT COUNT(*) FROM person WHERE age < ?1;', [v('integer', 100n)]), [{ 'COUNT(*)': 2n }]);
  assert.equal(q('SELECT * FROM person').length, 3);
  assert.equal(error(() => q('SELECT name FROM person WHERE age = ?2', [v('integer', 1n)])).val, 'wrong number of parameters: the statement takes 2, 1 given');
  assert.equal(error(() => q('SELECT nick FROM person')).tag, 'no-such-table');
  assert.equal(error(() => q('UPDATE person SET age = 1')).tag, 'invalid');
  assert.match(error(() => q('SELECT name FROM person JOIN team ON 1')).val, /does not understand .* db\.onQuery/);
});

test('onQuery answers what the subset does not', () => {
  const { db } = people();
  db.onQuery(/FROM person p JOIN team t/, (params, store) => store.rows('person').filter((p) => p.team_id !== null).map((p) => ({ name: p.name, big: 2n ** 60n })));
  const result = db.dbQuery('SELECT p.name FROM person p JOIN team t ON t.id = p.team_id', []);
  assert.deepEqual(result, { columns: ['name', 'big'], rows: [[v('text', 'Ann'), v('integer', 2n ** 60n)]] });
});

test('grants: reads of read and write tables, writes of write tables only', () => {
  const db = new FakeDatabase({ read: ['a'], write: ['b'] });
  db.createTable('a', { x: 'integer' }).createTable('b', { x: 'integer' }).createTable('c', { x: 'integer' });
  assert.deepEqual(db.dbQuery('SELECT x FROM a', []).rows, []);
  assert.deepEqual(db.dbQuery('SELECT x FROM b', []).rows, []);
  assert.equal(error(() => db.dbQuery('SELECT x FROM c', [])).tag, 'access-denied');
  assert.equal(error(() => db.dbInsert('a', [['x', v('integer', 1n)]])).tag, 'access-denied');
  assert.equal(db.dbInsert('b', [['x', v('integer', 1n)]]).length, 1);
  db.seed('a', [{ x: 1 }]); // seeding ignores grants
});

test('UUID spellings', () => {
  const hex = '22de0f4fc84e47be889cd61b856492bd';
  for (const text of [hex, hex.toUpperCase(), '22de0f4f-c84e-47be-889c-d61b856492bd', '{22de0f4f-c84e-47be-889c-d61b856492bd}', 'urn:uuid:22de0f4f-c84e-47be-889c-d61b856492bd']) {
    assert.equal(normaliseUuid(text), hex, text);
  }
  for (const text of ['', 'x', `${hex}0`, '22de0f4fc-84e-47be-889c-d61b856492bd']) assert.equal(normaliseUuid(text), undefined, text);
});
