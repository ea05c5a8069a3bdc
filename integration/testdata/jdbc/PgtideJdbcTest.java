// PgtideJdbcTest: checks the PostgreSQL JDBC driver against a server (pgtide in
// transaction mode, or PostgreSQL directly). Run by integration/txn_jdbc_test.go:
//
//   java -cp DIR:/usr/share/java/postgresql.jar PgtideJdbcTest <jdbc-url> <user> <password>
//
// Prints OK and exits 0 when every check passed; prints FAIL lines and exits 1
// otherwise.

import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.postgresql.PGStatement;

public class PgtideJdbcTest {
    static String url, user, password;
    static final List<String> failures = Collections.synchronizedList(new ArrayList<>());

    static void check(boolean ok, String what) {
        if (!ok) {
            failures.add(what);
            System.out.println("FAIL: " + what);
        }
    }

    static Connection connect() throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        p.setProperty("sslmode", "disable");
        p.setProperty("prepareThreshold", "5"); // the driver's default, stated
        p.setProperty("connectTimeout", "20");
        p.setProperty("socketTimeout", "60");
        return DriverManager.getConnection(url, p);
    }

    static long queryLong(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            if (!rs.next()) {
                throw new SQLException("no row from: " + sql);
            }
            return rs.getLong(1);
        }
    }

    static String queryString(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            if (!rs.next()) {
                throw new SQLException("no row from: " + sql);
            }
            return rs.getString(1);
        }
    }

    // One worker: its own connection; prepares statements in a worker-specific
    // order so that the driver's statement names (S_1, S_2, ...) stand for
    // different texts on different connections, and runs each 12 times
    // (past prepareThreshold=5, so they become named server-side statements).
    static void worker(int id, int executions) throws Exception {
        try (Connection c = connect()) {
            String shared = "SELECT ?::int8 * 2 + ?::int8 AS r";
            String unique = "SELECT ?::text || '-w" + id + "-' || ?::int4 AS s";
            String lookup = "SELECT id, label FROM jdbc_items WHERE id = ?";
            List<String> order = new ArrayList<>(List.of(shared, unique, lookup));
            Collections.rotate(order, id % 3);
            PreparedStatement[] ps = new PreparedStatement[3];
            for (int k = 0; k < 3; k++) {
                ps[k] = c.prepareStatement(order.get(k));
            }
            PreparedStatement psShared = ps[order.indexOf(shared)];
            PreparedStatement psUnique = ps[order.indexOf(unique)];
            PreparedStatement psLookup = ps[order.indexOf(lookup)];
            for (int i = 0; i < executions; i++) {
                // Round-robin across the three statements, in this worker's order.
                for (int k = 0; k < 3; k++) {
                    PreparedStatement p = ps[k];
                    if (p == psShared) {
                        p.setLong(1, id * 1000L + i);
                        p.setLong(2, i);
                        try (ResultSet rs = p.executeQuery()) {
                            check(rs.next(), "worker " + id + " exec " + i + ": shared statement returned no row");
                            long got = rs.getLong(1);
                            long want = (id * 1000L + i) * 2 + i;
                            check(got == want, "worker " + id + " exec " + i + ": shared statement = " + got + ", want " + want);
                        }
                    } else if (p == psUnique) {
                        p.setString(1, "u" + i);
                        p.setInt(2, i * 3);
                        try (ResultSet rs = p.executeQuery()) {
                            check(rs.next(), "worker " + id + " exec " + i + ": unique statement returned no row");
                            String got = rs.getString(1);
                            String want = "u" + i + "-w" + id + "-" + (i * 3);
                            check(want.equals(got), "worker " + id + " exec " + i + ": unique statement = " + got + ", want " + want);
                        }
                    } else {
                        int key = (id * 7 + i) % 20 + 1;
                        p.setInt(1, key);
                        try (ResultSet rs = p.executeQuery()) {
                            check(rs.next(), "worker " + id + " exec " + i + ": lookup " + key + " returned no row");
                            check(rs.getInt(1) == key && ("label-" + key).equals(rs.getString(2)),
                                    "worker " + id + " exec " + i + ": lookup " + key + " = " + rs.getInt(1) + "/" + rs.getString(2));
                            check(!rs.next(), "worker " + id + " exec " + i + ": lookup returned 2 rows");
                        }
                    }
                }
            }
            for (PreparedStatement p : ps) {
                boolean server = p.unwrap(PGStatement.class).isUseServerPrepare();
                check(server, "worker " + id + ": statement not switched to a named server-side statement after "
                        + executions + " executions (prepareThreshold=5)");
                p.close();
            }
            // A new statement object with an already-seen text still works.
            try (PreparedStatement again = c.prepareStatement(shared)) {
                again.setLong(1, 5);
                again.setLong(2, 1);
                try (ResultSet rs = again.executeQuery()) {
                    check(rs.next() && rs.getLong(1) == 11, "worker " + id + ": re-prepared shared statement");
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: PgtideJdbcTest <jdbc-url> <user> <password>");
            System.exit(2);
        }
        url = args[0];
        user = args[1];
        password = args[2];

        try (Connection c = connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS jdbc_items, jdbc_batch, jdbc_txn");
            st.execute("CREATE TABLE jdbc_items (id int PRIMARY KEY, label text NOT NULL)");
            st.execute("INSERT INTO jdbc_items SELECT g, 'label-' || g FROM generate_series(1, 20) g");
            st.execute("CREATE TABLE jdbc_batch (id int PRIMARY KEY, label text NOT NULL, n int8)");
            st.execute("CREATE TABLE jdbc_txn (id int PRIMARY KEY, label text NOT NULL)");
        }

        // 1. Prepared statements past prepareThreshold: one connection, then 10 at once.
        worker(0, 12);
        int threads = 10;
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        List<Future<?>> fs = new ArrayList<>();
        for (int t = 1; t <= threads; t++) {
            final int id = t;
            fs.add(pool.submit(() -> {
                worker(id, 12);
                return null;
            }));
        }
        for (int t = 0; t < threads; t++) {
            try {
                fs.get(t).get(120, TimeUnit.SECONDS);
            } catch (Exception e) {
                Throwable cause = e.getCause() != null ? e.getCause() : e;
                check(false, "worker " + (t + 1) + " threw " + cause);
                if (cause instanceof SQLException) {
                    SQLException se = (SQLException) cause;
                    System.out.println("  SQLState " + se.getSQLState());
                }
            }
        }
        pool.shutdown();

        // 2. Batch insert of 100 rows.
        try (Connection c = connect()) {
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_batch (id, label, n) VALUES (?, ?, ?)")) {
                for (int i = 1; i <= 100; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "b" + i);
                    ps.setLong(3, i * 10L);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check(counts.length == 100, "executeBatch returned " + counts.length + " counts, want 100");
                for (int i = 0; i < counts.length; i++) {
                    if (counts[i] != 1 && counts[i] != Statement.SUCCESS_NO_INFO) {
                        check(false, "executeBatch count[" + i + "] = " + counts[i]);
                        break;
                    }
                }
            }
            check(queryLong(c, "SELECT count(*) FROM jdbc_batch") == 100, "rows after batch insert != 100");
            check(queryLong(c, "SELECT sum(n) FROM jdbc_batch") == 50500, "sum(n) after batch insert != 50500");

            // A batch with a duplicate key in the middle fails as a whole (autocommit: one implicit transaction).
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_batch (id, label, n) VALUES (?, ?, ?)")) {
                int[] ids = {201, 202, 50, 203};
                for (int id : ids) {
                    ps.setInt(1, id);
                    ps.setString(2, "dup?" + id);
                    ps.setLong(3, 0);
                    ps.addBatch();
                }
                boolean threw = false;
                try {
                    ps.executeBatch();
                } catch (BatchUpdateException e) {
                    threw = true;
                    String state = e.getNextException() != null ? e.getNextException().getSQLState() : e.getSQLState();
                    check("23505".equals(state), "failing batch: SQLState " + state + ", want 23505");
                }
                check(threw, "batch with a duplicate key did not fail");
            }
            check(queryLong(c, "SELECT count(*) FROM jdbc_batch") == 100, "rows after failed batch != 100");
        }

        // 3. Transactions: commit visible to another connection, rollback not.
        try (Connection a = connect(); Connection b = connect()) {
            a.setAutoCommit(false);
            try (PreparedStatement ps = a.prepareStatement("INSERT INTO jdbc_txn (id, label) VALUES (?, ?)")) {
                ps.setInt(1, 1);
                ps.setString(2, "committed");
                check(ps.executeUpdate() == 1, "insert in transaction");
            }
            check(queryLong(a, "SELECT count(*) FROM jdbc_txn WHERE id = 1") == 1, "own uncommitted row not visible inside the transaction");
            check(queryLong(b, "SELECT count(*) FROM jdbc_txn WHERE id = 1") == 0, "uncommitted row visible to another connection");
            a.commit();
            check(queryLong(b, "SELECT count(*) FROM jdbc_txn WHERE id = 1") == 1, "committed row not visible to another connection");

            try (PreparedStatement ps = a.prepareStatement("INSERT INTO jdbc_txn (id, label) VALUES (?, ?)")) {
                ps.setInt(1, 2);
                ps.setString(2, "rolled back");
                check(ps.executeUpdate() == 1, "insert in second transaction");
            }
            check(queryLong(b, "SELECT count(*) FROM jdbc_txn WHERE id = 2") == 0, "uncommitted row visible to another connection");
            a.rollback();
            check(queryLong(a, "SELECT count(*) FROM jdbc_txn WHERE id = 2") == 0, "rolled back row visible to its own connection");
            check(queryLong(b, "SELECT count(*) FROM jdbc_txn WHERE id = 2") == 0, "rolled back row visible to another connection");

            // An error inside a transaction, then rollback, then the connection works.
            try (Statement st = a.createStatement()) {
                st.executeUpdate("INSERT INTO jdbc_txn (id, label) VALUES (3, 'x')");
                boolean threw = false;
                try {
                    st.executeUpdate("INSERT INTO jdbc_txn (id, label) VALUES (1, 'dup')");
                } catch (SQLException e) {
                    threw = true;
                    check("23505".equals(e.getSQLState()), "duplicate in transaction: SQLState " + e.getSQLState());
                }
                check(threw, "duplicate key in transaction did not fail");
            }
            a.rollback();
            a.setAutoCommit(true);
            check(queryLong(a, "SELECT count(*) FROM jdbc_txn") == 1, "rows after aborted transaction != 1");
            check(queryLong(b, "SELECT count(*) FROM jdbc_txn") == 1, "other connection: rows after aborted transaction != 1");
        }

        // 4. Session settings through setTransactionIsolation and setReadOnly
        // follow connection A (pgjdbc sends SET SESSION CHARACTERISTICS for
        // the isolation level) over 20 transactions while B holds a server
        // across each of them; B and later connections see the defaults.
        try (Connection a = connect(); Connection b = connect()) {
            a.setTransactionIsolation(Connection.TRANSACTION_SERIALIZABLE);
            a.setReadOnly(true);
            a.setAutoCommit(false);
            b.setAutoCommit(false);
            boolean bOpen = false;
            for (int i = 0; i < 20; i++) {
                check("serializable".equals(queryString(a, "SHOW transaction_isolation")), "A, transaction " + i + ": isolation not serializable");
                check("on".equals(queryString(a, "SHOW transaction_read_only")), "A, transaction " + i + ": not read only");
                a.commit();
                if (bOpen) {
                    b.commit();
                }
                check("read committed".equals(queryString(b, "SHOW transaction_isolation")), "B, round " + i + ": isolation not read committed");
                check("off".equals(queryString(b, "SHOW transaction_read_only")), "B, round " + i + ": read only");
                bOpen = true; // held across A's next transaction
            }
            b.commit();
        }
        for (int i = 0; i < 10; i++) {
            try (Connection c = connect()) {
                check("read committed".equals(queryString(c, "SHOW default_transaction_isolation")), "new connection " + i + ": default isolation changed");
            }
        }

        if (!failures.isEmpty()) {
            System.out.println(failures.size() + " check(s) failed");
            System.exit(1);
        }
        System.out.println("OK");
    }
}
