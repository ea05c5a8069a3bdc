"""SQL-level PREPARE / EXECUTE / DEALLOCATE with psycopg2 (simple protocol,
parameters interpolated by the client) through a transaction-mode pooler
with pool_size 2.

Two holder connections keep one server busy and swap it between them after
each of the client's transactions, so the client runs each transaction on
the other server. Through the pooler the client must run on both servers
and keep its statements; straight against PostgreSQL the holders change
nothing and the same checks hold.

Connection parameters come from the environment: PGT_HOST, PGT_PORT, PGT_DB,
PGT_USER, PGT_PASSWORD. Prints OK on success, exits non-zero otherwise.
"""
import os
import sys
import traceback

import psycopg2
import psycopg2.errors


class CheckError(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckError(msg)


def connect(autocommit=False):
    conn = psycopg2.connect(
        host=os.environ["PGT_HOST"],
        port=int(os.environ["PGT_PORT"]),
        dbname=os.environ["PGT_DB"],
        user=os.environ["PGT_USER"],
        password=os.environ["PGT_PASSWORD"],
        sslmode="disable",
        connect_timeout=10,
    )
    conn.autocommit = autocommit
    return conn


class Shuffler:
    """One holder always has a server (an open transaction); swap makes the
    other holder take the idle one, then frees the first."""

    def __init__(self):
        self.h = [connect(), connect()]
        self.cur = 0
        self.h[0].cursor().execute("SELECT 1")

    def swap(self):
        other = 1 - self.cur
        self.h[other].cursor().execute("SELECT 1")
        self.h[self.cur].commit()
        self.cur = other


def expect_error(conn, sql, exc, text):
    c = conn.cursor()
    try:
        c.execute(sql)
    except exc as e:
        check(text in str(e), "%s: %s does not mention %r" % (sql, e, text))
        if not conn.autocommit:
            conn.rollback()
        return
    raise CheckError("%s: no error, want %s" % (sql, exc.__name__))


def main():
    sh = Shuffler()
    a = connect()
    c = a.cursor()
    c.execute("CREATE TABLE sp2 (a int PRIMARY KEY, b text)")
    a.commit()
    sh.swap()
    c.execute("PREPARE ins (int, text) AS INSERT INTO sp2 VALUES ($1, $2)")
    a.commit()
    sh.swap()
    c.execute("PREPARE cnt AS SELECT count(*), coalesce(sum(a), 0) FROM sp2 WHERE b LIKE $1")
    a.commit()

    pids = set()
    total = 0
    for i in range(1, 21):
        sh.swap()
        total += i
        c.execute("EXECUTE ins(%s, %s)", (i, "v%d" % i))
        check(c.rowcount == 1, "round %d: EXECUTE ins affected %d rows" % (i, c.rowcount))
        c.execute("EXECUTE cnt(%s)", ("v%",))
        n, s = c.fetchone()
        check((n, s) == (i, total), "round %d: cnt = %r, want %r" % (i, (n, s), (i, total)))
        c.execute("SELECT pg_backend_pid()")
        pids.add(c.fetchone()[0])
        if i % 3 == 0:
            a.rollback()  # the rows go, the statements stay
            c.execute("EXECUTE ins(%s, %s)", (i, "v%d" % i))
        a.commit()

    pooled = a.get_backend_pid() not in pids  # pgtide mints its own PIDs
    if pooled:
        check(len(pids) == 2, "through the pooler the client ran on %r, want both servers" % pids)
    else:
        check(len(pids) == 1, "straight to PostgreSQL the client ran on %r" % pids)

    # Another client does not see the names.
    b = connect(autocommit=True)
    expect_error(b, "EXECUTE ins(100, 'b')", psycopg2.errors.InvalidSqlStatementName,
                 'prepared statement "ins" does not exist')

    # DEALLOCATE frees the name on every server.
    sh.swap()
    c.execute("DEALLOCATE ins")
    a.commit()
    for _ in range(2):
        sh.swap()
        expect_error(a, "EXECUTE ins(1, 'x')", psycopg2.errors.InvalidSqlStatementName,
                     'prepared statement "ins" does not exist')
    c.execute("PREPARE ins AS SELECT $1::int * 3")
    a.commit()
    for k in range(2):
        sh.swap()
        c.execute("EXECUTE ins(%s)", (k + 5,))
        check(c.fetchone()[0] == 3 * (k + 5), "new ins")
        a.commit()
    print("OK")


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(1)
