"""asyncpg's pool runs RESET ALL (Connection.reset) each time a connection goes
back to it. A pool created with server_settings (sent in the startup packet)
must keep them across releases, as against PostgreSQL directly: search_path
(an unqualified table name must still find the table in schema app), jit and
TimeZone.

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
    await setup.execute("DROP SCHEMA IF EXISTS app CASCADE; CREATE SCHEMA app; "
                        "CREATE TABLE app.items (n int); INSERT INTO app.items VALUES (7)")
    await setup.close()

    settings = {"search_path": "app, public", "jit": "off", "TimeZone": "Asia/Tokyo"}
    pool = await asyncpg.create_pool(**args, min_size=2, max_size=2, server_settings=settings)
    other = await asyncpg.connect(**args)  # another client of the same servers
    for i in range(5):
        async with pool.acquire() as conn:
            n = await conn.fetchval("SELECT n FROM items")
            if n != 7:
                fail("round %d: SELECT n FROM items gave %r" % (i, n))
            row = await conn.fetchrow("SELECT current_setting('search_path') AS sp, "
                                      "current_setting('jit') AS jit, current_setting('TimeZone') AS tz")
            got = (row["sp"], row["jit"], row["tz"])
            if got != ("app, public", "off", "Asia/Tokyo"):
                fail("round %d: settings after a release %r" % (i, got))
            if conn.get_settings().TimeZone != "Asia/Tokyo":
                fail("round %d: reported TimeZone %r" % (i, conn.get_settings().TimeZone))
            await conn.execute("SET search_path = public; SET jit = on")
        await other.fetchval("SELECT 1")
    await other.close()
    await pool.close()
    print("OK")


asyncio.run(asyncio.wait_for(main(), 60))
