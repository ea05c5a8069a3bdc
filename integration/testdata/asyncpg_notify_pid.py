"""asyncpg's add_listener callback gets the notifying backend's PID, which
asyncpg's own test_listeners compares with the notifier's get_server_pid()
(the PID in the BackendKeyData the notifier was told at login).

Checked: the listener notifying itself (NOTIFY, NOTIFY in a transaction,
pg_notify); with PGT_CROSS=1 also another connection, and one that closes
right after its NOTIFY while the listener is inside a transaction (so the
notification reaches the listener after the notifier left).

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
    cross = os.environ.get("PGT_CROSS") == "1"
    got = asyncio.Queue()

    def on_notify(conn, pid, channel, payload):
        got.put_nowait((pid, channel, payload))

    async def expect(payload, pid, who):
        try:
            p, ch, pl = await asyncio.wait_for(got.get(), 10)
        except asyncio.TimeoutError:
            fail("no notification %r (%s)" % (payload, who))
        if ch != "npid" or pl != payload:
            fail("notification %r on %r, want %r" % (pl, ch, payload))
        if p != pid:
            fail("notification %r: pid %d, want %d (%s's get_server_pid())" % (payload, p, pid, who))

    lis = await asyncpg.connect(**args)
    await lis.add_listener("npid", on_notify)
    me = lis.get_server_pid()
    await lis.execute("NOTIFY npid, 'self'")
    await expect("self", me, "the listener")
    async with lis.transaction():
        await lis.execute("NOTIFY npid, 'self-txn'")
    await expect("self-txn", me, "the listener")
    await lis.execute("SELECT pg_notify('npid', $1)", "self-fn")
    await expect("self-fn", me, "the listener")

    if cross:
        other = await asyncpg.connect(**args)
        await other.execute("NOTIFY npid, 'other'")
        await expect("other", other.get_server_pid(), "another connection")
        await other.close()

        tr = lis.transaction()
        await tr.start()
        gone = await asyncpg.connect(**args)
        gone_pid = gone.get_server_pid()
        await gone.execute("NOTIFY npid, 'gone'")
        await gone.close()
        await asyncio.sleep(0.5)  # the notifier's server is released, or its backend gone
        await tr.commit()
        await expect("gone", gone_pid, "a connection closed after its NOTIFY")

    await lis.remove_listener("npid", on_notify)
    await lis.close()
    print("OK")


asyncio.run(main())
