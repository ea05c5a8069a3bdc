// node-postgres (npm "pg") checks, run by integration/txn_node_test.go against
// PostgreSQL directly and through pgtide in transaction mode. The connection
// URL is in PGT_DSN. Prints OK and exits 0 when every check passed; prints
// FAIL lines and exits 1 otherwise.
'use strict';

const pg = require('pg');

const dsn = process.env.PGT_DSN;
if (!dsn) {
  console.error('PGT_DSN is not set');
  process.exit(2);
}

const failures = [];
function check(ok, what) {
  if (!ok) {
    failures.push(what);
    console.log('FAIL: ' + what);
  }
}

async function newClient() {
  const c = new pg.Client({ connectionString: dsn, connectionTimeoutMillis: 20000 });
  await c.connect();
  return c;
}

// Named queries: every client uses the name "q1", but client i's q1 has a
// text (and result shape) of its own, so a statement that leaks from one
// client to another, or lands on a server without being prepared there, shows.
async function namedClient(i, rounds) {
  const c = await newClient();
  try {
    const q1Text = i % 2 === 0
      ? `SELECT $1::int * ${i + 1} AS r, 'client-${i}'::text AS who`
      : `SELECT 'odd-${i}:' || $1::text AS who`;
    for (let r = 0; r < rounds; r++) {
      const res = await c.query({ name: 'q1', text: q1Text, values: [r] });
      check(res.rows.length === 1, `client ${i} round ${r}: q1 returned ${res.rows.length} rows`);
      const row = res.rows[0] || {};
      if (i % 2 === 0) {
        check(row.r === r * (i + 1) && row.who === `client-${i}`,
          `client ${i} round ${r}: q1 = ${JSON.stringify(row)}, want r=${r * (i + 1)} who=client-${i}`);
      } else {
        check(row.who === `odd-${i}:${r}` && !('r' in row),
          `client ${i} round ${r}: q1 = ${JSON.stringify(row)}, want who=odd-${i}:${r}`);
      }
      // A second named statement, same text on every client.
      const res2 = await c.query({ name: 'q2', text: 'SELECT $1::text || $2::text AS s, count(*)::int AS n FROM node_items WHERE id <= $3', values: ['a', String(i), r % 10] });
      const row2 = res2.rows[0] || {};
      check(row2.s === 'a' + i && row2.n === r % 10, `client ${i} round ${r}: q2 = ${JSON.stringify(row2)}`);
      // Every 5th round inside a transaction block.
      if (r % 5 === 4) {
        await c.query('BEGIN');
        const t = await c.query({ name: 'q1', text: q1Text, values: [r + 1000] });
        const tr = t.rows[0] || {};
        check(i % 2 === 0 ? tr.r === (r + 1000) * (i + 1) : tr.who === `odd-${i}:${r + 1000}`,
          `client ${i} round ${r}: q1 in transaction = ${JSON.stringify(tr)}`);
        await c.query('COMMIT');
      }
    }
    // An error from a named statement, then the same statement works again.
    let code = null;
    try {
      await c.query({ name: 'qerr', text: 'SELECT 10 / $1::int AS d', values: [0] });
    } catch (e) {
      code = e.code;
    }
    check(code === '22012', `client ${i}: named division by zero gave ${code}, want 22012`);
    const ok = await c.query({ name: 'qerr', text: 'SELECT 10 / $1::int AS d', values: [5] });
    check(ok.rows[0] && ok.rows[0].d === 2, `client ${i}: named statement after error = ${JSON.stringify(ok.rows[0])}`);
  } finally {
    await c.end();
  }
}

async function main() {
  const setup = await newClient();
  await setup.query('DROP TABLE IF EXISTS node_items, node_txn');
  await setup.query('CREATE TABLE node_items (id int PRIMARY KEY, label text NOT NULL)');
  await setup.query("INSERT INTO node_items SELECT g, 'item-' || g FROM generate_series(1, 50) g");
  await setup.query('CREATE TABLE node_txn (id int PRIMARY KEY, label text NOT NULL)');
  await setup.end();

  // 1. Named queries on 8 clients at once.
  const clients = 8;
  const named = [];
  for (let i = 0; i < clients; i++) named.push(namedClient(i, 20));
  const results = await Promise.allSettled(named);
  results.forEach((r, i) => check(r.status === 'fulfilled', `named-query client ${i} threw: ${r.reason && (r.reason.stack || r.reason)}`));

  // 2. A pool of 10 and 100 concurrent queries.
  const pool = new pg.Pool({ connectionString: dsn, max: 10, connectionTimeoutMillis: 30000 });
  try {
    const qs = [];
    for (let q = 0; q < 100; q++) {
      qs.push(pool.query('SELECT $1::int * 2 AS d, label FROM node_items WHERE id = $2', [q, (q % 50) + 1]).then((res) => {
        const row = res.rows[0] || {};
        check(row.d === q * 2 && row.label === `item-${(q % 50) + 1}`, `pool query ${q}: ${JSON.stringify(row)}`);
      }, (err) => check(false, `pool query ${q} failed: ${err.message} (${err.code})`)));
    }
    await Promise.all(qs);
    check(pool.totalCount <= 10, `pool opened ${pool.totalCount} connections, max 10`);

    // 3. Transactions on a pooled client: ROLLBACK leaves nothing, COMMIT is seen by others.
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const ins = await c.query('INSERT INTO node_txn (id, label) VALUES ($1, $2)', [1, 'rolled back']);
      check(ins.rowCount === 1, `insert in transaction: rowCount ${ins.rowCount}`);
      const inside = await c.query('SELECT count(*)::int AS n FROM node_txn');
      check(inside.rows[0].n === 1, `own uncommitted row: ${inside.rows[0].n}`);
      const outside = await pool.query('SELECT count(*)::int AS n FROM node_txn');
      check(outside.rows[0].n === 0, `uncommitted row visible to another client: ${outside.rows[0].n}`);
      await c.query('ROLLBACK');
      const after = await c.query('SELECT count(*)::int AS n FROM node_txn');
      check(after.rows[0].n === 0, `rolled back row still there: ${after.rows[0].n}`);
      const afterOther = await pool.query('SELECT count(*)::int AS n FROM node_txn');
      check(afterOther.rows[0].n === 0, `rolled back row visible to another client: ${afterOther.rows[0].n}`);

      await c.query('BEGIN');
      await c.query('INSERT INTO node_txn (id, label) VALUES ($1, $2)', [2, 'committed']);
      await c.query('COMMIT');
      const committed = await pool.query('SELECT label FROM node_txn WHERE id = $1', [2]);
      check(committed.rows.length === 1 && committed.rows[0].label === 'committed', `committed row: ${JSON.stringify(committed.rows)}`);
    } finally {
      c.release();
    }
  } finally {
    await pool.end();
  }

  if (failures.length > 0) {
    console.log(`${failures.length} check(s) failed`);
    process.exit(1);
  }
  console.log('OK');
}

main().catch((err) => {
  console.log('FAIL: ' + (err.stack || err));
  process.exit(1);
});
