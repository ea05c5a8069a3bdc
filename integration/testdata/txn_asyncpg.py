"""asyncpg through a transaction-mode pooler: a pool of 20 client connections
(on 5 server connections behind pgtide), the default statement cache on, so
every query is a protocol-level named prepared statement that asyncpg names
__asyncpg_stmt_N__ per connection.

Checks:
  * 200 concurrent queries of varying SQL text, parameter types and fetch
    methods, executemany into a table; every result is checked.
  * conn.prepare() once, the statement used many times across transactions
    while other clients keep the servers busy.
  * several connections whose statements get the SAME asyncpg names for
    DIFFERENT SQL (the PgBouncer 1.18 bug class): interleaved many times, each
    connection must get its own query's results.

Connection parameters come from the environment: PGT_HOST, PGT_PORT, PGT_DB,
PGT_USER, PGT_PASSWORD. Prints OK on success, exits non-zero otherwise.
"""
import asyncio
import datetime
import decimal
import os
import sys
import traceback

import asyncpg


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


class CheckError(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckError(msg)


def conn_kwargs():
    return dict(
        host=os.environ["PGT_HOST"],
        port=int(os.environ["PGT_PORT"]),
        database=os.environ["PGT_DB"],
        user=os.environ["PGT_USER"],
        password=os.environ["PGT_PASSWORD"],
        ssl=False,
        timeout=15,
        command_timeout=30,
    )


# One query "kind" per i % len(KINDS); each returns (coroutine, expected).
async def q_mul(conn, i):
    k = i % 7 + 2
    got = await conn.fetchval("SELECT $1::int * %d" % k, i)
    check(got == i * k, "SELECT %d::int * %d = %r" % (i, k, got))


async def q_concat(conn, i):
    got = await conn.fetchval("SELECT $1::text || '-' || $2::text", "a%d" % i, str(i * 3))
    check(got == "a%d-%d" % (i, i * 3), "concat(%d) = %r" % (i, got))


async def q_row(conn, i):
    row = await conn.fetchrow("SELECT $1::bigint AS a, $2::text AS b, $3::float8 * 2 AS c", i * 1000000007, "r%d" % i, i + 0.25)
    check(row is not None, "fetchrow(%d) returned None" % i)
    check(row["a"] == i * 1000000007 and row["b"] == "r%d" % i and row["c"] == (i + 0.25) * 2,
          "fetchrow(%d) = %r" % (i, tuple(row)))


async def q_series(conn, i):
    n = i % 9 + 1
    rows = await conn.fetch("SELECT x, x * x AS sq, $2::text AS tag FROM generate_series(1, $1::int) AS x ORDER BY x", n, "t%d" % i)
    check([tuple(r) for r in rows] == [(x, x * x, "t%d" % i) for x in range(1, n + 1)],
          "series(%d) = %r" % (i, [tuple(r) for r in rows]))


async def q_numeric_date(conn, i):
    d = datetime.date(2020, 1, 1) + datetime.timedelta(days=i)
    row = await conn.fetchrow("SELECT $1::numeric + 1.5 AS n, $2::date + 1 AS d", decimal.Decimal(i), d)
    check(row["n"] == decimal.Decimal(i) + decimal.Decimal("1.5") and row["d"] == d + datetime.timedelta(days=1),
          "numeric/date(%d) = %r" % (i, tuple(row)))


async def q_array(conn, i):
    got = await conn.fetchval("SELECT array_length($1::int[], 1) * 1000 + $2::smallint", list(range(i % 5 + 1)), i % 100)
    check(got == (i % 5 + 1) * 1000 + i % 100, "array(%d) = %r" % (i, got))


async def q_txn(conn, i):
    async with conn.transaction():
        pid1 = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.execute("INSERT INTO txn_asyncpg_t (k, v) VALUES ($1, $2)", 100000 + i, "txn%d" % i)
        got = await conn.fetchval("SELECT v FROM txn_asyncpg_t WHERE k = $1", 100000 + i)
        pid2 = await conn.fetchval("SELECT pg_backend_pid()")
    check(got == "txn%d" % i, "in-transaction read back %r" % got)
    check(pid1 == pid2, "transaction moved from backend %d to %d" % (pid1, pid2))


async def q_executemany(conn, i):
    base = 1000 + i * 10
    await conn.executemany("INSERT INTO txn_asyncpg_t (k, v) VALUES ($1, $2)",
                           [(base + j, "m%d" % (base + j)) for j in range(5)])
    got = await conn.fetch("SELECT k, v FROM txn_asyncpg_t WHERE k >= $1 AND k < $2 ORDER BY k", base, base + 10)
    check([tuple(r) for r in got] == [(base + j, "m%d" % (base + j)) for j in range(5)],
          "executemany(%d) read back %r" % (i, [tuple(r) for r in got]))


KINDS = [q_mul, q_concat, q_row, q_series, q_numeric_date, q_array, q_txn, q_executemany]


async def part_concurrent(pool):
    async def one(i):
        async with pool.acquire() as conn:
            await KINDS[i % len(KINDS)](conn, i)

    await asyncio.gather(*(one(i) for i in range(200)))
    async with pool.acquire() as conn:
        n = await conn.fetchval("SELECT count(*) FROM txn_asyncpg_t")
    n_txn = len([i for i in range(200) if KINDS[i % len(KINDS)] is q_txn])
    n_many = len([i for i in range(200) if KINDS[i % len(KINDS)] is q_executemany])
    check(n == n_txn + 5 * n_many, "table has %d rows, want %d" % (n, n_txn + 5 * n_many))
    # A second round on the now warm statement caches.
    await asyncio.gather(*(one(i) for i in range(200) if KINDS[i % len(KINDS)] not in (q_txn, q_executemany)))


async def part_prepare(pool):
    stop = asyncio.Event()

    async def noise(j):
        # Keeps the servers busy so that the prepared statement's client
        # lands on different servers.
        n = 0
        while not stop.is_set():
            async with pool.acquire() as conn:
                async with conn.transaction():
                    got = await conn.fetchval("SELECT $1::int + %d" % j, n)
                    check(got == n + j, "noise %d: %r" % (j, got))
                    await asyncio.sleep(0.002)
            n += 1

    noisers = [asyncio.ensure_future(noise(j)) for j in range(8)]
    try:
        async with pool.acquire() as conn:
            stmt = await conn.prepare("SELECT $1::int * 10 + $2::int AS v, $3::text AS t")
            pids = set()
            for i in range(30):
                if i % 3 == 0:
                    row = await stmt.fetchrow(i, 7, "p%d" % i)  # outside a transaction
                else:
                    async with conn.transaction():
                        row = await stmt.fetchrow(i, 7, "p%d" % i)
                        pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
                        row2 = await stmt.fetchrow(i + 1, 8, "q%d" % i)
                        check(tuple(row2) == ((i + 1) * 10 + 8, "q%d" % i), "prepared stmt (2nd in txn) %d = %r" % (i, tuple(row2)))
                check(tuple(row) == (i * 10 + 7, "p%d" % i), "prepared stmt %d = %r" % (i, tuple(row)))
                await asyncio.sleep(0.003)
            vals = [r["v"] for r in await stmt.fetch(5, 5, "x")]
            check(vals == [55], "stmt.fetch = %r" % vals)
            check(await stmt.fetchval(1, 2, "y") == 12, "stmt.fetchval")
            print("prepared statement ran on %d distinct backends" % len(pids), file=sys.stderr)
    finally:
        stop.set()
        await asyncio.gather(*noisers)


async def part_same_names():
    # Each connection is fresh, so asyncpg numbers its statements from the
    # same start: connection j's __asyncpg_stmt_N__ is a different query on
    # every connection. With 10 connections on 5 servers, names collide on
    # the same server.
    conns = [await asyncpg.connect(**conn_kwargs()) for _ in range(10)]
    try:
        def qa(j):
            return "SELECT $1::int * %d + %d AS v" % (j + 2, j)

        def qb(j):
            # Same name slot (the 2nd statement on every connection), different
            # result type on odd connections.
            if j % 2:
                return "SELECT ($1::int + %d)::text AS v" % j
            return "SELECT $1::int - %d AS v" % j

        def expect_b(j, i):
            return str(i + j) if j % 2 else i - j

        # Same order on every connection so the names line up. asyncpg's
        # prepare() sends Parse/Describe/Flush without a Sync, which keeps the
        # server attached (as with PgBouncer) until the next Sync: execute each
        # statement at once, or 10 connections preparing on 5 servers would
        # pin all of them.
        stmts = []
        for j, c in enumerate(conns):
            sa = await c.prepare(qa(j))
            check(await sa.fetchval(1) == (j + 2) + j, "conn %d: first run of stmt A" % j)
            sb = await c.prepare(qb(j))
            check(await sb.fetchval(1) == expect_b(j, 1), "conn %d: first run of stmt B" % j)
            stmts.append((sa, sb))

        async def round_(i):
            async def one(j):
                c = conns[j]
                sa, sb = stmts[j]
                if (i + j) % 2:
                    async with c.transaction():
                        va = await sa.fetchval(i)
                        vb = await sb.fetchval(i)
                else:
                    va = await sa.fetchval(i)
                    vb = await sb.fetchval(i)
                # The cached (unnamed-by-the-user) statements, asyncpg names
                # them __asyncpg_stmt_3__, _4__ on every connection.
                vc = await c.fetchval("SELECT $1::int + %d" % (j * 100), i)
                vd = await c.fetchval("SELECT $1::text || '#%d'" % j, str(i))
                check(va == i * (j + 2) + j, "conn %d round %d: stmt A = %r, want %r" % (j, i, va, i * (j + 2) + j))
                check(vb == expect_b(j, i), "conn %d round %d: stmt B = %r, want %r" % (j, i, vb, expect_b(j, i)))
                check(vc == i + j * 100, "conn %d round %d: cached stmt = %r, want %r" % (j, i, vc, i + j * 100))
                check(vd == "%d#%d" % (i, j), "conn %d round %d: cached text stmt = %r" % (j, i, vd))

            await asyncio.gather(*(one(j) for j in range(len(conns))))

        for i in range(40):
            await round_(i)
    finally:
        for c in conns:
            await c.close()


async def main():
    pool = await asyncpg.create_pool(min_size=20, max_size=20, **conn_kwargs())
    try:
        async with pool.acquire() as conn:
            await conn.execute("DROP TABLE IF EXISTS txn_asyncpg_t")
            await conn.execute("CREATE TABLE txn_asyncpg_t (k int PRIMARY KEY, v text NOT NULL)")
        await asyncio.wait_for(part_concurrent(pool), 40)
        await asyncio.wait_for(part_prepare(pool), 40)
    finally:
        await asyncio.wait_for(pool.close(), 15)
    await asyncio.wait_for(part_same_names(), 40)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except CheckError as e:
        fail(str(e))
    except asyncio.TimeoutError:
        traceback.print_exc()
        fail("timed out")
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        fail("unexpected exception")
    print("OK")
