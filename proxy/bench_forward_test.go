package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/pgtide/pgtide/integration/pgtest"
	"github.com/pgtide/pgtide/proxy/config"
	"github.com/pgtide/pgtide/proxy/wire"
)

// ---- a fake PostgreSQL server ----------------------------------------------

// fakePG speaks just enough of the protocol for pgconn to log in and for
// pgtide to forward simple and extended queries, COPY FROM STDIN, BEGIN /
// COMMIT, and its own set_config / DISCARD ALL. Replies are pre-encoded.
type fakePG struct {
	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	nextPID atomic.Uint32

	// Counters for tests.
	logins, cancels, terminates, queries atomic.Int64
	queryLog                             chan string // non-blocking; nil = off
}

var (
	fakeRowDesc1 = mustEncode(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		{Name: []byte("?column?"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}})
	fakeParamDesc = mustEncode(&pgproto3.ParameterDescription{})
	fakeDataRow1  = mustEncode(&pgproto3.DataRow{Values: [][]byte{[]byte("1")}})
	fakeSelect1   = mustEncode(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	fakeRFQIdle   = mustEncode(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	fakeSelectOne = concat(fakeRowDesc1, fakeDataRow1, fakeSelect1)
	fakeRows1000  = buildRows(1000)
)

func mustEncode(m interface{ Encode([]byte) ([]byte, error) }) []byte {
	b, err := m.Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// buildRows is a RowDescription, n DataRows of (int4, text) and the
// CommandComplete, about 60 bytes a row.
func buildRows(n int) []byte {
	out := mustEncode(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		{Name: []byte("id"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1},
		{Name: []byte("val"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1},
	}})
	for i := range n {
		out, _ = (&pgproto3.DataRow{Values: [][]byte{
			[]byte(strconv.Itoa(i)), []byte(fmt.Sprintf("row %06d: the quick brown fox jumps over", i))}}).Encode(out)
	}
	out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT " + strconv.Itoa(n))}).Encode(out)
	return out
}

func startFakePG(tb testing.TB) *fakePG {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	f := &fakePG{ln: ln, conns: map[net.Conn]struct{}{}}
	f.nextPID.Store(1000)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*net.TCPConn).SetNoDelay(true)
			f.mu.Lock()
			f.conns[c] = struct{}{}
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.serve(c)
				f.mu.Lock()
				delete(f.conns, c)
				f.mu.Unlock()
				c.Close()
			}()
		}
	}()
	return f
}

func (f *fakePG) port() int { return f.ln.Addr().(*net.TCPAddr).Port }

// Close stops accepting, closes every connection and waits for them.
func (f *fakePG) Close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *fakePG) serve(c net.Conn) {
	be := pgproto3.NewBackend(c, c)
	for {
		m, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch m.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
			continue
		case *pgproto3.CancelRequest:
			f.cancels.Add(1)
			return
		case *pgproto3.StartupMessage:
		default:
			return
		}
		break
	}
	f.logins.Add(1)
	var out []byte
	out = append(out, mustEncode(&pgproto3.AuthenticationOk{})...)
	for _, kv := range [][2]string{
		{"server_version", "15.0"}, {"client_encoding", "UTF8"}, {"DateStyle", "ISO, MDY"},
		{"standard_conforming_strings", "on"}, {"integer_datetimes", "on"}, {"TimeZone", "UTC"},
		{"server_encoding", "UTF8"},
	} {
		out, _ = (&pgproto3.ParameterStatus{Name: kv[0], Value: kv[1]}).Encode(out)
	}
	out, _ = (&pgproto3.BackendKeyData{ProcessID: f.nextPID.Add(1), SecretKey: []byte{1, 2, 3, 4}}).Encode(out)
	out = append(out, fakeRFQIdle...)
	if _, err := c.Write(out); err != nil {
		return
	}
	be.SetMaxBodyLen(1 << 20)
	tx := byte('I')
	copyIn := false
	copyExt := false   // the COPY was started by Execute: no ReadyForQuery until Sync
	unnamedQuery := "" // the unnamed statement's text
	extErr := false    // an extended-protocol error: skip until Sync
	rfq := func() {
		out = append(out, 'Z', 0, 0, 0, 5, tx)
	}
	flush := func() bool {
		if len(out) == 0 {
			return true
		}
		_, err := c.Write(out)
		out = out[:0]
		return err == nil
	}
	out = out[:0]
	for {
		m, err := be.Receive()
		if err != nil {
			return
		}
		if copyIn {
			switch m := m.(type) {
			case *pgproto3.CopyData:
				continue
			case *pgproto3.CopyDone:
				copyIn = false
				out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("COPY 1")}).Encode(out)
				if !copyExt {
					rfq()
				}
			case *pgproto3.CopyFail:
				copyIn = false
				out, _ = (&pgproto3.ErrorResponse{Severity: "ERROR", Code: "57014", Message: "COPY from stdin failed: " + m.Message}).Encode(out)
				if copyExt {
					extErr = true
				} else {
					rfq()
				}
			case *pgproto3.Sync, *pgproto3.Flush:
				continue // ignored in COPY IN
			default:
				return
			}
			if !flush() {
				return
			}
			continue
		}
		if extErr {
			if _, ok := m.(*pgproto3.Sync); !ok {
				continue
			}
			extErr = false
		}
		switch m := m.(type) {
		case *pgproto3.Query:
			f.queries.Add(1)
			if f.queryLog != nil {
				select {
				case f.queryLog <- m.String:
				default:
				}
			}
			q := m.String
			up := strings.ToUpper(q)
			switch {
			case q == "rows1000":
				out = append(out, fakeRows1000...)
			case strings.HasPrefix(up, "COPY") && strings.Contains(up, "FROM STDIN"):
				out, _ = (&pgproto3.CopyInResponse{OverallFormat: 0, ColumnFormatCodes: []uint16{0}}).Encode(out)
				copyIn, copyExt = true, false
				if !flush() {
					return
				}
				continue
			case strings.HasPrefix(up, "SELECT"):
				out = append(out, fakeSelectOne...)
			case up == "BEGIN":
				tx = 'T'
				out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("BEGIN")}).Encode(out)
			case up == "COMMIT" || up == "ROLLBACK":
				tx = 'I'
				out, _ = (&pgproto3.CommandComplete{CommandTag: []byte(up)}).Encode(out)
			case up == "DISCARD ALL":
				out, _ = (&pgproto3.CommandComplete{CommandTag: []byte("DISCARD ALL")}).Encode(out)
			case q == "":
				out = append(out, 'I', 0, 0, 0, 4)
			default:
				tag := up
				if i := strings.IndexByte(tag, ' '); i > 0 {
					tag = tag[:i]
				}
				out, _ = (&pgproto3.CommandComplete{CommandTag: []byte(tag)}).Encode(out)
			}
			rfq()
			if !flush() {
				return
			}
		case *pgproto3.Parse:
			if strings.Contains(m.Query, "syntax error") {
				out, _ = (&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42601", Message: "syntax error"}).Encode(out)
				extErr = true
				continue
			}
			if m.Name == "" {
				unnamedQuery = m.Query
			}
			out = append(out, '1', 0, 0, 0, 4)
		case *pgproto3.Bind:
			out = append(out, '2', 0, 0, 0, 4)
		case *pgproto3.Describe:
			if m.ObjectType == 'S' {
				out = append(out, fakeParamDesc...)
			}
			out = append(out, fakeRowDesc1...)
		case *pgproto3.Execute:
			if up := strings.ToUpper(unnamedQuery); strings.HasPrefix(up, "COPY") && strings.Contains(up, "FROM STDIN") {
				out, _ = (&pgproto3.CopyInResponse{OverallFormat: 0, ColumnFormatCodes: []uint16{0}}).Encode(out)
				copyIn, copyExt = true, true
				if !flush() {
					return
				}
				continue
			}
			out = append(out, fakeDataRow1...)
			out = append(out, fakeSelect1...)
		case *pgproto3.Close:
			out = append(out, '3', 0, 0, 0, 4)
		case *pgproto3.Sync:
			rfq()
			if !flush() {
				return
			}
		case *pgproto3.Flush:
			if !flush() {
				return
			}
		case *pgproto3.Terminate:
			f.terminates.Add(1)
			return
		default:
			return
		}
	}
}

// ---- pgtide in front of it --------------------------------------------------

// fwdEnv is a fake server and a pgtide Server in front of it, with one
// database per pool mode: "db_session", "db_transaction", "db_statement".
type fwdEnv struct {
	pg  *fakePG
	srv *Server
}

func startFwdEnv(tb testing.TB, tweak func(*config.Config)) *fwdEnv {
	tb.Helper()
	pg := startFakePG(tb)
	cfg := config.Default()
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.AuthType = "trust"
	cfg.Users["bench"] = config.User{}
	for _, m := range []config.PoolMode{config.PoolSession, config.PoolTransaction, config.PoolStatement} {
		cfg.Databases["db_"+string(m)] = config.Database{Host: "127.0.0.1", Port: pg.port(), DBName: "bench", PoolMode: m}
	}
	if tweak != nil {
		tweak(cfg)
	}
	srv := New(cfg, zerolog.Nop())
	if err := srv.Listen(); err != nil {
		pg.Close()
		tb.Fatal(err)
	}
	srv.Serve()
	return &fwdEnv{pg: pg, srv: srv}
}

func (e *fwdEnv) Close() {
	e.srv.Close()
	e.pg.Close()
}

// rawClient is a logged-in connection driven with raw protocol bytes.
type rawClient struct {
	nc net.Conn
	rd *wire.Reader
}

// connect logs in with pgconn, to pgtide (target = a pool mode) or straight
// to the fake server (target "direct"), and hijacks the socket.
func (e *fwdEnv) connect(tb testing.TB, target string) *rawClient {
	tb.Helper()
	host, port, db := "127.0.0.1", e.pg.port(), "bench"
	if target != "direct" {
		addr := e.srv.Addrs()[0].(*net.TCPAddr)
		port, db = addr.Port, "db_"+target
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%d user=bench dbname=%s sslmode=disable", host, port, db))
	if err != nil {
		tb.Fatalf("connect %s: %v", target, err)
	}
	if err := pc.SyncConn(ctx); err != nil {
		tb.Fatal(err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		tb.Fatal(err)
	}
	if tc, ok := hc.Conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &rawClient{nc: hc.Conn, rd: wire.NewReader(hc.Conn, 16<<10)}
}

func (c *rawClient) Close() {
	_, _ = c.nc.Write([]byte{'X', 0, 0, 0, 4})
	_ = c.nc.Close()
}

// roundTrip writes req and reads replies through the ReadyForQuery,
// returning how many messages and bytes came back, and the message types
// (when types is non-nil).
func (c *rawClient) roundTrip(req []byte, types *[]byte) (msgs, nbytes int, err error) {
	if _, err := c.nc.Write(req); err != nil {
		return 0, 0, err
	}
	return c.readUntilReady(types)
}

func (c *rawClient) readUntilReady(types *[]byte) (msgs, nbytes int, err error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		typ, body, err := c.rd.ReadMessage(1 << 24)
		if err != nil {
			return msgs, nbytes, err
		}
		msgs++
		nbytes += wire.HeaderLen + len(body)
		if types != nil {
			*types = append(*types, typ)
		}
		switch typ {
		case 'E':
			e := pgproto3.ErrorResponse{}
			_ = e.Decode(body)
			if e.Severity == "FATAL" {
				return msgs, nbytes, fmt.Errorf("FATAL %s: %s", e.Code, e.Message)
			}
		case 'Z':
			return msgs, nbytes, nil
		}
	}
}

var (
	reqSimple   = mustEncode(&pgproto3.Query{String: "SELECT 1"})
	reqRows1000 = mustEncode(&pgproto3.Query{String: "rows1000"})
	reqExtended = concat(
		mustEncode(&pgproto3.Parse{Query: "SELECT $1::int4", ParameterOIDs: []uint32{23}}),
		mustEncode(&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}, ResultFormatCodes: []int16{0}}),
		mustEncode(&pgproto3.Describe{ObjectType: 'P'}),
		mustEncode(&pgproto3.Execute{}),
		mustEncode(&pgproto3.Sync{}),
	)
)

var fwdTargets = []string{"direct", string(config.PoolSession), string(config.PoolTransaction)}

// ---- benchmarks -------------------------------------------------------------

func benchTargets(b *testing.B, req []byte, setBytes bool) {
	e := startFwdEnv(b, nil)
	defer e.Close()
	for _, target := range fwdTargets {
		b.Run(target, func(b *testing.B) {
			c := e.connect(b, target)
			defer c.Close()
			_, n, err := c.roundTrip(req, nil) // warm up: borrow, set params
			if err != nil {
				b.Fatal(err)
			}
			if setBytes {
				b.SetBytes(int64(n))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := c.roundTrip(req, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSimpleQueryRoundTrip: Query "SELECT 1" and its four replies.
func BenchmarkSimpleQueryRoundTrip(b *testing.B) { benchTargets(b, reqSimple, false) }

// BenchmarkExtendedRoundTrip: unnamed Parse/Bind/Describe/Execute/Sync.
func BenchmarkExtendedRoundTrip(b *testing.B) { benchTargets(b, reqExtended, false) }

// BenchmarkResult1000Rows: one Query answered with 1000 DataRows (~60 KB).
func BenchmarkResult1000Rows(b *testing.B) { benchTargets(b, reqRows1000, true) }

// BenchmarkParallelSimpleQuery: GOMAXPROCS clients each doing SELECT 1
// round trips at once (transaction mode shares the pool's servers).
func BenchmarkParallelSimpleQuery(b *testing.B) {
	e := startFwdEnv(b, nil)
	defer e.Close()
	for _, target := range fwdTargets {
		b.Run(target, func(b *testing.B) {
			b.ReportAllocs()
			var mu sync.Mutex
			var clients []*rawClient
			defer func() {
				for _, c := range clients {
					c.Close()
				}
			}()
			b.RunParallel(func(pb *testing.PB) {
				c := e.connect(b, target)
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
				for pb.Next() {
					if _, _, err := c.roundTrip(reqSimple, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// ---- the same, once each, as a test ----------------------------------------

func TestFakeServerRoundTrip(t *testing.T) {
	e := startFwdEnv(t, nil)
	defer e.Close()
	for _, target := range append(fwdTargets, string(config.PoolStatement)) {
		t.Run(target, func(t *testing.T) {
			c := e.connect(t, target)
			defer c.Close()
			for i := range 3 { // more than once: transaction mode re-borrows
				var types []byte
				if _, _, err := c.roundTrip(reqSimple, &types); err != nil || string(types) != "TDCZ" {
					t.Fatalf("simple #%d: %q %v", i, types, err)
				}
				types = types[:0]
				if _, _, err := c.roundTrip(reqExtended, &types); err != nil || string(types) != "12TDCZ" {
					t.Fatalf("extended #%d: %q %v", i, types, err)
				}
				types = types[:0]
				msgs, n, err := c.roundTrip(reqRows1000, &types)
				if err != nil || msgs != 1003 || n != len(fakeRows1000)+len(fakeRFQIdle) {
					t.Fatalf("rows1000 #%d: %d msgs, %d bytes, %v", i, msgs, n, err)
				}
				if bytes.Count(types, []byte{'D'}) != 1000 {
					t.Fatalf("rows1000 #%d: %d DataRows", i, bytes.Count(types, []byte{'D'}))
				}
			}
		})
	}
	// Transaction and statement mode returned their servers.
	pgtest.WaitUntil(t, 3*time.Second, "servers back in the pools", func() bool {
		for _, ps := range e.srv.Pools() {
			if ps.Mode != config.PoolSession && ps.Lent != 0 {
				return false
			}
		}
		return true
	})
}

// poolStats returns the stats of the pool for db (and user "bench").
func (e *fwdEnv) poolStats(db string) (PoolStats, bool) {
	for _, ps := range e.srv.Pools() {
		if ps.Database == db && ps.User == "bench" {
			return ps, true
		}
	}
	return PoolStats{}, false
}
