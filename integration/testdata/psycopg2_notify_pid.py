"""psycopg2's Notify.pid is the notifying backend's PID, which psycopg2's
own test_notify compares with the notifier's get_backend_pid() (the PID in
the BackendKeyData the notifier was told at login), the notifier being the
listener itself or a short-lived process that connects, notifies, prints
its get_backend_pid() and exits.

Checked: the listener notifying itself; with PGT_CROSS=1 also a notifier in
another process, as psycopg2's test does.

Connection parameters come from the environment: PGT_HOST, PGT_PORT, PGT_DB,
PGT_USER, PGT_PASSWORD. Prints OK on success, exits non-zero otherwise.
"""
import os
import select
import subprocess
import sys
import time

import psycopg2

ARGS = dict(host=os.environ["PGT_HOST"], port=int(os.environ["PGT_PORT"]),
            dbname=os.environ["PGT_DB"], user=os.environ["PGT_USER"],
            password=os.environ["PGT_PASSWORD"])

NOTIFIER = """
import os, psycopg2
conn = psycopg2.connect(host=os.environ["PGT_HOST"], port=int(os.environ["PGT_PORT"]),
                        dbname=os.environ["PGT_DB"], user=os.environ["PGT_USER"],
                        password=os.environ["PGT_PASSWORD"])
conn.autocommit = True
conn.cursor().execute("NOTIFY npid, 'other'")
print(conn.get_backend_pid())
conn.close()
"""


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def expect(conn, payload, pid, who):
    deadline = time.time() + 10
    while not conn.notifies:
        left = deadline - time.time()
        if left <= 0:
            fail("no notification %r (%s)" % (payload, who))
        select.select([conn], [], [], left)
        conn.poll()
    n = conn.notifies.pop(0)
    if n.channel != "npid" or n.payload != payload:
        fail("notification %r on %r, want %r" % (n.payload, n.channel, payload))
    if n.pid != pid:
        fail("notification %r: pid %d, want %d (%s's get_backend_pid())" % (payload, n.pid, pid, who))


def main():
    conn = psycopg2.connect(**ARGS)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("LISTEN npid")
    cur.execute("NOTIFY npid, 'self'")
    expect(conn, "self", conn.get_backend_pid(), "the listener")
    if os.environ.get("PGT_CROSS") == "1":
        out = subprocess.check_output([sys.executable, "-c", NOTIFIER])
        expect(conn, "other", int(out.decode().strip()), "a notifier process that exited")
    cur.execute("UNLISTEN *")
    conn.close()
    print("OK")


main()
