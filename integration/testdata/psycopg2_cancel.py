"""conn.cancel() from another thread interrupts pg_sleep with 57014, and
cancels only that connection's query.

Connection parameters come from the environment: PGT_HOST, PGT_PORT, PGT_DB,
PGT_USER, PGT_PASSWORD. Prints OK on success, exits non-zero otherwise.
"""
import os
import sys
import threading
import time
import traceback

import psycopg2
import psycopg2.errors


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def connect():
    return psycopg2.connect(
        host=os.environ["PGT_HOST"],
        port=int(os.environ["PGT_PORT"]),
        dbname=os.environ["PGT_DB"],
        user=os.environ["PGT_USER"],
        password=os.environ["PGT_PASSWORD"],
        sslmode="disable",
        connect_timeout=10,
    )


def main():
    conn = connect()
    bystander = connect()
    bystander.autocommit = True

    # The bystander runs a query of its own at the same time; the cancel must
    # not touch it.
    bystander_result = {}

    def run_bystander():
        try:
            with bystander.cursor() as c:
                c.execute("SELECT pg_sleep(1.5), 'bystander done'")
                bystander_result["row"] = c.fetchone()
        except Exception as e:  # noqa: BLE001
            bystander_result["err"] = e

    bt = threading.Thread(target=run_bystander)
    bt.start()

    cancel_at = {}

    def cancel():
        time.sleep(0.5)
        cancel_at["t"] = time.monotonic()
        conn.cancel()

    ct = threading.Thread(target=cancel)
    ct.start()
    cur = conn.cursor()
    start = time.monotonic()
    try:
        cur.execute("SELECT pg_sleep(10)")
        fail("pg_sleep(10) was not cancelled (took %.1fs)" % (time.monotonic() - start))
    except psycopg2.errors.QueryCanceled as e:
        end = time.monotonic()
        check(e.pgcode == "57014", "pgcode %r, want 57014" % e.pgcode)
        check("canceling statement due to user request" in (e.pgerror or ""), "pgerror %r" % e.pgerror)
        ct.join()
        delay = end - cancel_at["t"]
        check(delay < 2.0, "query ended %.2fs after cancel(), want < 2s" % delay)
    ct.join()
    conn.rollback()
    cur.execute("SELECT 1")
    check(cur.fetchone() == (1,), "connection unusable after a cancel")
    conn.rollback()

    bt.join(10)
    check(not bt.is_alive(), "bystander query hangs")
    check("err" not in bystander_result, "bystander's query failed: %r" % bystander_result.get("err"))
    check(bystander_result.get("row") == ("", "bystander done"), "bystander row %r" % (bystander_result.get("row"),))

    conn.close()
    bystander.close()
    print("OK")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        fail("unexpected exception")
