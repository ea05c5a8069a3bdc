"""The psycopg2 session-management tutorial, as assertions.

Connection parameters come from the environment: PGT_HOST, PGT_PORT, PGT_DB,
PGT_USER, PGT_PASSWORD. Exits non-zero with a message on the first failure,
prints OK on success.
"""
import os
import sys
import traceback

import psycopg2
import psycopg2.errors
import psycopg2.extensions as ext


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


def count(conn, where):
    with conn.cursor() as c:
        c.execute("SELECT count(*) FROM tut WHERE " + where)
        n = c.fetchone()[0]
    return n


def main():
    conn = connect()
    check(conn.closed == 0, "new connection is closed")
    check(conn.info.dbname == os.environ["PGT_DB"], "dbname %r" % conn.info.dbname)
    check(conn.info.user == os.environ["PGT_USER"], "user %r" % conn.info.user)
    # A second client to observe what is committed.
    other = connect()
    other.autocommit = True

    cur = conn.cursor()
    cur.execute("CREATE TABLE tut (id int PRIMARY KEY, data text)")
    conn.commit()

    # execute + fetchall
    cur.execute("SELECT g, 'v' || g FROM generate_series(1, 3) g ORDER BY g")
    rows = cur.fetchall()
    check(rows == [(1, "v1"), (2, "v2"), (3, "v3")], "fetchall returned %r" % (rows,))
    cur.execute("SELECT %s::int + %s, %s", (40, 2, "text with 'quotes'"))
    check(cur.fetchone() == (42, "text with 'quotes'"), "parameters")
    conn.commit()

    # rollback() discards an INSERT
    cur.execute("INSERT INTO tut VALUES (%s, %s)", (1, "discarded"))
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_INTRANS,
          "status after INSERT is %d, want INTRANS" % conn.get_transaction_status())
    conn.rollback()
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE, "status after rollback")
    check(count(conn, "id = 1") == 0, "rolled back row visible to its own connection")
    conn.rollback()
    check(count(other, "id = 1") == 0, "rolled back row visible to a second connection")

    # an explicit transaction, committed, becomes visible to others
    cur.execute("INSERT INTO tut VALUES (%s, %s)", (2, "committed"))
    cur.execute("INSERT INTO tut VALUES (%s, %s)", (3, "committed too"))
    check(count(other, "id IN (2, 3)") == 0, "uncommitted rows visible to a second connection")
    conn.commit()
    check(count(other, "id IN (2, 3)") == 2, "committed rows not visible to a second connection")

    # autocommit: every statement is visible at once
    conn.autocommit = True
    cur.execute("INSERT INTO tut VALUES (%s, %s)", (4, "auto"))
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE, "autocommit left a transaction open")
    check(count(other, "id = 4") == 1, "autocommitted row 4 not visible to a second connection")
    cur.execute("UPDATE tut SET data = 'auto2' WHERE id = 4")
    with other.cursor() as c:
        c.execute("SELECT data FROM tut WHERE id = 4")
        check(c.fetchone()[0] == "auto2", "autocommitted UPDATE not visible")
    cur.execute("DELETE FROM tut WHERE id = 4")
    check(count(other, "id = 4") == 0, "autocommitted DELETE not visible")
    conn.autocommit = False

    # a failing statement raises psycopg2.Error with pgcode 42P01
    try:
        cur.execute("SELECT * FROM no_such_table")
        fail("querying a missing table did not raise")
    except psycopg2.Error as e:
        check(e.pgcode == "42P01", "pgcode %r, want 42P01" % e.pgcode)
        check(isinstance(e, psycopg2.errors.UndefinedTable), "exception type %r" % type(e))
        check("no_such_table" in e.pgerror, "pgerror %r" % e.pgerror)
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_INERROR, "status after error is not INERROR")
    try:
        cur.execute("SELECT 1")
        fail("statement in an aborted transaction did not raise")
    except psycopg2.errors.InFailedSqlTransaction as e:
        check(e.pgcode == "25P02", "pgcode %r, want 25P02" % e.pgcode)
    conn.rollback()
    cur.execute("SELECT 1")
    check(cur.fetchone() == (1,), "connection not usable after rollback")
    conn.rollback()

    # with conn: commits on success ...
    with conn:
        with conn.cursor() as c:
            c.execute("INSERT INTO tut VALUES (%s, %s)", (5, "with-block"))
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE, "with-block left a transaction open")
    check(count(other, "id = 5") == 1, "with-block did not commit")
    # ... and rolls back on exception
    try:
        with conn:
            with conn.cursor() as c:
                c.execute("INSERT INTO tut VALUES (%s, %s)", (6, "with-block rolled back"))
                raise RuntimeError("boom")
    except RuntimeError:
        pass
    check(conn.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE, "with-block left a transaction open")
    check(count(other, "id = 6") == 0, "with-block did not roll back on exception")
    # ... also when the exception is a database error
    try:
        with conn:
            with conn.cursor() as c:
                c.execute("INSERT INTO tut VALUES (%s, %s)", (7, "x"))
                c.execute("INSERT INTO tut VALUES (%s, %s)", (2, "duplicate"))
        fail("duplicate key did not raise")
    except psycopg2.errors.UniqueViolation as e:
        check(e.pgcode == "23505", "pgcode %r" % e.pgcode)
    check(count(other, "id = 7") == 0, "with-block did not roll back on a database error")
    # the connection is still usable after the with-blocks
    with conn:
        with conn.cursor() as c:
            c.execute("SELECT array_agg(id ORDER BY id) FROM tut")
            ids = c.fetchone()[0]
    check(ids == [2, 3, 5], "final ids %r, want [2, 3, 5]" % (ids,))

    conn.close()
    check(conn.closed != 0, "close() did not close")
    try:
        conn.cursor()
        fail("cursor() on a closed connection did not raise")
    except psycopg2.InterfaceError:
        pass
    other.close()
    print("OK")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        fail("unexpected exception")
