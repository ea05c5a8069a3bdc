"""psycopg2 through a transaction-mode pooler (pool of 3): session state.

Client A sets search_path, statement_timeout, the isolation level (psycopg2's
set_session(isolation_level=...) runs SET SESSION CHARACTERISTICS when
autocommit is on), a custom parameter and a role, then runs 20 transactions
while two other clients hold servers so A moves: A sees its values every
time, the others the defaults. After A disconnects 20 new clients see only
defaults. Then a temporary table and a session advisory lock work across A2's
transactions (pinning), the lock seen held from another client.

Environment: PGT_HOST, PGT_PORT, PGT_DB, PGT_USER, PGT_PASSWORD, PGT_ROLE
(a role PGT_USER is a member of). Prints OK on success.
"""
import os
import sys

import psycopg2
import psycopg2.extensions


def connect():
    return psycopg2.connect(
        host=os.environ["PGT_HOST"], port=int(os.environ["PGT_PORT"]),
        dbname=os.environ["PGT_DB"], user=os.environ["PGT_USER"],
        password=os.environ["PGT_PASSWORD"], sslmode="disable", connect_timeout=10)


VIEW = """SELECT current_setting('search_path'), current_setting('statement_timeout'),
  current_setting('transaction_isolation'), coalesce(current_setting('myapp.tenant', true), ''),
  current_user::text, pg_backend_pid()"""


def view(conn):
    cur = conn.cursor()
    cur.execute(VIEW)
    row = cur.fetchone()
    return row[:5], row[5]


def main():
    user = os.environ["PGT_USER"]
    role = os.environ["PGT_ROLE"]
    default = ('"$user", public', "0", "read committed", "", user)
    mine = ("public", "1234ms", "repeatable read", "tenant-py", role)

    a = connect()
    a.autocommit = True
    cur = a.cursor()
    cur.execute("SET search_path = public")
    cur.execute("SET statement_timeout = '1234ms'")
    a.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ)
    cur.execute("SET myapp.tenant = 'tenant-py'")
    cur.execute("SET ROLE " + role)
    a.autocommit = False

    others = [connect(), connect()]
    pids = set()
    held = None
    for i in range(20):
        got, pid = view(a)
        a.commit()
        pids.add(pid)
        if got != mine:
            print("A, transaction %d on %d: %r, want %r" % (i, pid, got, mine))
            return 1
        if held is not None:
            held.commit()
        held = others[i % 2]
        got, pid = view(held)  # stays open across A's next transaction
        if got != default:
            print("other client, round %d on %d: %r, want defaults" % (i, pid, got))
            return 1
    held.rollback()
    print("A ran on %d server(s)" % len(pids))
    a.close()
    for o in others:
        o.close()
    for i in range(20):
        c = connect()
        got, pid = view(c)
        c.close()
        if got != default:
            print("new client %d after A left, on %d: %r" % (i, pid, got))
            return 1

    a2 = connect()
    b = connect()
    cur = a2.cursor()
    cur.execute("CREATE TEMP TABLE pt (v int)")
    a2.commit()
    bcur = b.cursor()
    bcur.execute("SELECT 1")  # b holds a server in a transaction
    cur.execute("INSERT INTO pt VALUES (1)")
    a2.commit()
    b.commit()
    cur.execute("SELECT count(*) FROM pt")
    if cur.fetchone()[0] != 1:
        print("temp table lost")
        return 1
    cur.execute("SELECT pg_advisory_lock(99)")
    a2.commit()
    bcur.execute("SELECT pg_try_advisory_lock(99)")
    if bcur.fetchone()[0]:
        print("another client took A2's advisory lock")
        return 1
    b.commit()
    cur.execute("SELECT pg_advisory_unlock_all()")
    a2.commit()
    a2.close()
    b.close()
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
