"""psycopg 3 through a transaction-mode pooler.

Checks:
  * prepare_threshold=0: every parameterized query is a server-side named
    prepared statement (psycopg names them _pg3_N per connection, so names
    collide across connections); run many times across transactions by
    several clients at once, autocommit on and off, every result checked.
  * pipeline mode: several executes in one pipeline, results checked; an
    error inside a pipeline (the rest of the batch is aborted) and recovery.

Connection parameters come from the environment: PGT_HOST, PGT_PORT, PGT_DB,
PGT_USER, PGT_PASSWORD. Prints OK on success, exits non-zero otherwise.
"""
import os
import sys
import threading
import traceback

import psycopg
import psycopg.errors


class CheckError(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckError(msg)


def connect(**kw):
    return psycopg.connect(
        host=os.environ["PGT_HOST"],
        port=int(os.environ["PGT_PORT"]),
        dbname=os.environ["PGT_DB"],
        user=os.environ["PGT_USER"],
        password=os.environ["PGT_PASSWORD"],
        sslmode="disable",
        connect_timeout=10,
        prepare_threshold=0,
        **kw,
    )


def worker(w, rounds, errors):
    try:
        with connect() as conn:
            conn.autocommit = (w % 2 == 0)
            for i in range(rounds):
                if conn.autocommit:
                    # Autocommit: every statement its own transaction; the
                    # client holds no server between them.
                    r = conn.execute("SELECT %s::int * %s::int + " + str(w), (i, w + 1)).fetchone()
                    check(r == (i * (w + 1) + w,), "worker %d autocommit round %d: %r" % (w, i, r))
                    r = conn.execute("SELECT %s::text || %s::text", ("w%d" % w, str(i))).fetchone()
                    check(r == ("w%d%d" % (w, i),), "worker %d autocommit text round %d: %r" % (w, i, r))
                    with conn.transaction():
                        pid1 = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                        conn.execute("INSERT INTO txn_pg3_t (w, i, v) VALUES (%s, %s, %s)", (w, i, "a%d" % i))
                        r = conn.execute("SELECT v FROM txn_pg3_t WHERE w = %s AND i = %s", (w, i)).fetchone()
                        pid2 = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                    check(r == ("a%d" % i,), "worker %d txn round %d read back %r" % (w, i, r))
                    check(pid1 == pid2, "worker %d: transaction moved from backend %d to %d" % (w, pid1, pid2))
                else:
                    # Not autocommit: psycopg sends BEGIN before the first
                    # statement; the transaction spans several executes.
                    pid1 = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                    conn.execute("INSERT INTO txn_pg3_t (w, i, v) VALUES (%s, %s, %s)", (w, i, "b%d" % i))
                    r = conn.execute("SELECT %s::int * %s::int + " + str(w), (i, w + 1)).fetchone()
                    check(r == (i * (w + 1) + w,), "worker %d txn round %d: %r" % (w, i, r))
                    r = conn.execute("SELECT count(*) FROM txn_pg3_t WHERE w = %s AND i = %s", (w, i)).fetchone()
                    check(r == (1,), "worker %d txn round %d: own uncommitted row count %r" % (w, i, r))
                    pid2 = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                    check(pid1 == pid2, "worker %d: transaction moved from backend %d to %d" % (w, pid1, pid2))
                    if i % 3 == 2:
                        conn.rollback()
                    else:
                        conn.commit()
            # What this worker committed: autocommit workers all rounds,
            # the others every round but i % 3 == 2.
            conn.autocommit = True
            got = conn.execute("SELECT array_agg(i ORDER BY i) FROM txn_pg3_t WHERE w = %s", (w,)).fetchone()[0] or []
            if w % 2 == 0:
                want = list(range(rounds))
            else:
                want = [i for i in range(rounds) if i % 3 != 2]
            check(got == want, "worker %d committed rows %r, want %r" % (w, got, want))
    except Exception as e:  # noqa: BLE001
        errors.append("worker %d: %s\n%s" % (w, e, traceback.format_exc()))


def part_concurrent():
    with connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS txn_pg3_t")
        conn.execute("CREATE TABLE txn_pg3_t (w int, i int, v text, PRIMARY KEY (w, i))")
    errors = []
    threads = [threading.Thread(target=worker, args=(w, 30, errors)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        check(not t.is_alive(), "a worker thread is stuck after 60 s")
    check(not errors, "\n".join(errors))


def part_pipeline(autocommit):
    with connect(autocommit=autocommit) as conn:
        # Plain pipeline: several statements, one sync.
        with conn.pipeline():
            c1 = conn.execute("SELECT %s::int + 1", (1,))
            c2 = conn.execute("SELECT x FROM generate_series(1, %s) x ORDER BY x", (4,))
            c3 = conn.execute("SELECT %s::text", ("three",))
            c4 = conn.cursor()
            c4.executemany("INSERT INTO txn_pg3_p (k, ac) VALUES (%s, %s)", [(k, autocommit) for k in range(5)])
        check(c1.fetchone() == (2,), "pipeline c1 %r" % (c1.fetchall(),))
        check(c2.fetchall() == [(1,), (2,), (3,), (4,)], "pipeline c2")
        check(c3.fetchone() == ("three",), "pipeline c3")
        if not autocommit:
            conn.commit()
        n = conn.execute("SELECT count(*) FROM txn_pg3_p WHERE ac = %s", (autocommit,)).fetchone()[0]
        check(n == 5, "pipeline executemany inserted %d rows, want 5" % n)
        if not autocommit:
            conn.commit()

        # Pipeline with explicit syncs in the middle.
        with conn.pipeline() as p:
            cs = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(10)]
            p.sync()
            cs += [conn.execute("SELECT %s::int * 2", (i,)) for i in range(10, 20)]
        for i, c in enumerate(cs):
            check(c.fetchone() == (i * 2,), "pipeline with sync: statement %d" % i)
        if not autocommit:
            conn.commit()

        # An error inside a pipeline: the statements after it in the same
        # batch are aborted; the error surfaces; the connection recovers.
        raised = None
        try:
            with conn.pipeline():
                conn.execute("INSERT INTO txn_pg3_p (k, ac) VALUES (%s, %s)", (100, autocommit))
                conn.execute("SELECT 1 / %s::int", (0,))
                conn.execute("INSERT INTO txn_pg3_p (k, ac) VALUES (%s, %s)", (101, autocommit))
        except psycopg.errors.DivisionByZero as e:
            raised = e
        check(raised is not None, "division by zero inside a pipeline did not raise")
        check(raised.sqlstate == "22012", "sqlstate %r" % raised.sqlstate)
        if not autocommit:
            check(conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR,
                  "after error in pipeline: status %r, want INERROR" % conn.info.transaction_status)
            conn.rollback()
        check(conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE,
              "after error in pipeline: status %r, want IDLE" % conn.info.transaction_status)
        r = conn.execute("SELECT %s::int + 40", (2,)).fetchone()
        check(r == (42,), "after error in pipeline: %r" % (r,))
        ks = [k for (k,) in conn.execute("SELECT k FROM txn_pg3_p WHERE ac = %s AND k >= 100 ORDER BY k", (autocommit,))]
        if autocommit:
            # Autocommit in a pipeline: the statement before the error is in
            # the same implicit transaction up to the Sync, so nothing of the
            # failed batch is committed.
            check(ks in ([], [100]), "autocommit pipeline error: rows %r" % ks)
        else:
            check(ks == [], "rolled-back pipeline left rows %r" % ks)
            conn.commit()

        # A pipeline works again after the error.
        with conn.pipeline():
            cs = [conn.execute("SELECT %s::text || '!'", ("p%d" % i,)) for i in range(5)]
        for i, c in enumerate(cs):
            check(c.fetchone() == ("p%d!" % i,), "pipeline after error: statement %d" % i)
        if not autocommit:
            conn.commit()


def main():
    part_concurrent()
    with connect(autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS txn_pg3_p")
        conn.execute("CREATE TABLE txn_pg3_p (k int, ac bool, PRIMARY KEY (k, ac))")
    # Pipelines while other clients keep the servers busy.
    stop = threading.Event()
    noise_err = []

    def noise(j):
        try:
            with connect(autocommit=True) as c:
                n = 0
                while not stop.is_set():
                    r = c.execute("SELECT %s::int + " + str(j), (n,)).fetchone()
                    check(r == (n + j,), "noise %d: %r" % (j, r))
                    n += 1
        except Exception as e:  # noqa: BLE001
            noise_err.append("noise %d: %s" % (j, e))

    ns = [threading.Thread(target=noise, args=(j,)) for j in range(4)]
    for t in ns:
        t.start()
    try:
        for _ in range(3):
            part_pipeline(autocommit=True)
            part_pipeline(autocommit=False)
            with connect(autocommit=True) as conn:
                conn.execute("DELETE FROM txn_pg3_p")
    finally:
        stop.set()
        for t in ns:
            t.join(30)
    check(not noise_err, "\n".join(noise_err))


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
