"""Cancel through a transaction-mode pooler (pool_size 2).

  * conn.cancel() during pg_sleep(10) inside a transaction ends it with 57014
    within 2 s, while another client is busy on the other server; that
    client's query is not touched; the connection is usable afterwards.
  * conn.cancel() while the client holds no server (idle, autocommit) is
    harmless: the two other clients, each busy on one of the two servers
    (one of them the server the idle client used last), finish normally, and
    the idle client's next query works.

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


class CheckError(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckError(msg)


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


def busy(conn, secs, tag, result):
    """Runs pg_sleep(secs) in a transaction; stores ('ok', row) or ('err', e)."""
    try:
        with conn.cursor() as c:
            c.execute("SELECT pg_sleep(%s), %s", (secs, tag))
            row = c.fetchone()
        conn.commit()
        result.append(("ok", row))
    except Exception as e:  # noqa: BLE001
        result.append(("err", e))
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001
            pass


def part_cancel_running():
    conn = connect()  # not autocommit: pg_sleep runs inside BEGIN
    bystander = connect()
    res = []
    bt = threading.Thread(target=busy, args=(bystander, 1.5, "bystander", res))
    bt.start()
    time.sleep(0.2)

    cancel_at = {}

    def cancel():
        time.sleep(0.5)
        cancel_at["t"] = time.monotonic()
        conn.cancel()

    ct = threading.Thread(target=cancel)
    ct.start()
    cur = conn.cursor()
    cur.execute("SELECT 1")  # BEGIN + a statement: the transaction holds a server
    start = time.monotonic()
    try:
        cur.execute("SELECT pg_sleep(10)")
        raise CheckError("pg_sleep(10) was not cancelled (took %.1fs)" % (time.monotonic() - start))
    except psycopg2.errors.QueryCanceled as e:
        end = time.monotonic()
        ct.join()
        check(e.pgcode == "57014", "pgcode %r, want 57014" % e.pgcode)
        delay = end - cancel_at["t"]
        check(delay < 2.0, "query ended %.2fs after cancel(), want < 2s" % delay)
    ct.join()
    check(conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INERROR,
          "after cancel: transaction status %r, want INERROR" % conn.get_transaction_status())
    conn.rollback()
    cur = conn.cursor()
    cur.execute("SELECT 41 + 1")
    check(cur.fetchone() == (42,), "query after cancel")
    conn.commit()
    bt.join(15)
    check(not bt.is_alive(), "bystander stuck")
    check(len(res) == 1 and res[0][0] == "ok" and res[0][1][1] == "bystander",
          "bystander's query was affected by the cancel: %r" % res)
    conn.close()
    bystander.close()


def part_cancel_idle():
    idle = connect()
    idle.autocommit = True
    b1, b2 = connect(), connect()
    for rnd in range(2):
        with idle.cursor() as c:
            c.execute("SELECT pg_backend_pid()")
            c.fetchone()
        res1, res2 = [], []
        t1 = threading.Thread(target=busy, args=(b1, 1.0, "b1", res1))
        t2 = threading.Thread(target=busy, args=(b2, 1.0, "b2", res2))
        t1.start()
        t2.start()
        time.sleep(0.4)  # both servers of the pool are now busy
        idle.cancel()
        time.sleep(0.1)
        idle.cancel()
        t1.join(15)
        t2.join(15)
        check(not t1.is_alive() and not t2.is_alive(), "busy clients stuck")
        for name, r in (("b1", res1), ("b2", res2)):
            check(len(r) == 1 and r[0][0] == "ok" and r[0][1][1] == name,
                  "round %d: cancel from an idle client hit %s's query: %r" % (rnd, name, r))
        with idle.cursor() as c:
            c.execute("SELECT 'still fine'")
            check(c.fetchone() == ("still fine",), "idle client after its cancel")
    for c in (idle, b1, b2):
        c.close()


def main():
    part_cancel_running()
    part_cancel_idle()


if __name__ == "__main__":
    try:
        main()
    except CheckError as e:
        print("FAIL: " + str(e), file=sys.stderr)
        sys.exit(1)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print("FAIL: unexpected exception", file=sys.stderr)
        sys.exit(1)
    print("OK")
