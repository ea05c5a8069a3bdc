"""asyncpg's timeout= on a query that cannot start: the pooler's one server
(or, against PostgreSQL directly, the table) is held by another connection's
open transaction. asyncpg sends a cancel request when the timeout passes and
waits for the query's answer; the query must end as cancelled, never run,
and the connection must stay usable.

Connection parameters come from the environment: PGT_HOST, PGT_PORT, PGT_DB,
PGT_USER, PGT_PASSWORD. Prints OK on success, exits non-zero otherwise.
"""
import asyncio
import os
import sys

import asyncpg


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


async def main():
    args = dict(host=os.environ["PGT_HOST"], port=int(os.environ["PGT_PORT"]),
                database=os.environ["PGT_DB"], user=os.environ["PGT_USER"],
                password=os.environ["PGT_PASSWORD"])
    setup = await asyncpg.connect(**args)
    await setup.execute("DROP TABLE IF EXISTS wc; CREATE TABLE wc (n int)")
    await setup.close()

    holder = await asyncpg.connect(**args)
    waiter = await asyncpg.connect(**args)
    tr = holder.transaction()
    await tr.start()
    await holder.execute("LOCK TABLE wc IN ACCESS EXCLUSIVE MODE")

    for i in range(3):
        try:
            await waiter.execute("INSERT INTO wc VALUES ($1)", i, timeout=0.3)
            fail("the INSERT ran while the other transaction was open")
        except asyncio.TimeoutError:
            pass
        if waiter.is_closed():
            fail("the connection closed after the timeout")

    await tr.commit()
    n = await waiter.fetchval("SELECT count(*) FROM wc")
    if n != 0:
        fail("a cancelled INSERT ran: %d rows" % n)
    if await waiter.fetchval("SELECT 41 + 1") != 42:
        fail("the connection is not usable after the cancels")
    await waiter.close()
    await holder.close()
    print("OK")


try:
    asyncio.run(asyncio.wait_for(main(), 30))
except asyncio.TimeoutError:
    fail("timed out: a query cancelled by asyncpg's timeout= did not end")
