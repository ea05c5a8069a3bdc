package proxy

// Unit tests for small pure helpers with security or compatibility weight
// (issue 14 item 5): the options=-c feature, error renaming for mapped
// prepared statements, and which dial errors are retried.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/config"
)

func TestSplitOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"-c search_path=a", []string{"-c", "search_path=a"}},
		{"  -csearch_path=a\t--work-mem=64MB\n", []string{"-csearch_path=a", "--work-mem=64MB"}},
		{`-c application_name=two\ words`, []string{"-c", "application_name=two words"}},
		{`-c x=a\\b`, []string{"-c", `x=a\b`}},
		{`-c x=trailing\`, []string{"-c", "x=trailing"}},
	} {
		if got := splitOptions(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitOptions(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestWantFromStartup(t *testing.T) {
	ss := &session{want: map[string]string{}}
	err := ss.wantFromStartup(config.Default(), config.Database{}, map[string]string{
		"user": "u", "database": "d", "application_name": "app", "DateStyle": "ISO",
		"options": `-c search_path=s1 --statement-timeout=5s -cwork_mem=1MB -c lock_timeout=2s\ `,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"application_name": "app", "datestyle": "ISO", "search_path": "s1",
		"statement_timeout": "5s", "work_mem": "1MB", "lock_timeout": "2s ",
	}
	if !reflect.DeepEqual(ss.want, want) {
		t.Errorf("want = %v; expected %v", ss.want, want)
	}
	for _, bad := range []string{"-X", "-c", "-c =v", "--=v", "-c novalue"} {
		ss := &session{want: map[string]string{}}
		err := ss.wantFromStartup(config.Default(), config.Database{}, map[string]string{"options": bad})
		var ce *clientError
		if !errors.As(err, &ce) {
			t.Errorf("options %q: err = %v; want a client error", bad, err)
			continue
		}
		if ce.Code != codeFeatureNotSupported && ce.Code != codeSyntaxError {
			t.Errorf("options %q: SQLSTATE %s", bad, ce.Code)
		}
	}
}

// TestWantFromStartupIgnored: ignore_startup_parameters keeps a parameter
// off the servers whether it came as a startup parameter or in options.
func TestWantFromStartupIgnored(t *testing.T) {
	cfg := config.Default()
	cfg.IgnoreStartupParameters = []string{"Extra_Float_Digits", "search_path"}
	ss := &session{want: map[string]string{}}
	err := ss.wantFromStartup(cfg, config.Database{TimeZone: "UTC", DateStyle: "German"}, map[string]string{
		"user": "u", "database": "d", "extra_float_digits": "3", "application_name": "a",
		"options": "-c search_path=s --work-mem=1MB --DateStyle=ISO",
	})
	if err != nil {
		t.Fatal(err)
	}
	// The database's defaults fill in only what the client did not send.
	if want := map[string]string{"application_name": "a", "work_mem": "1MB", "datestyle": "ISO", "timezone": "UTC"}; !reflect.DeepEqual(ss.want, want) {
		t.Errorf("want = %v; expected %v", ss.want, want)
	}
}

func TestRenameInError(t *testing.T) {
	er := &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42P05",
		Message: `prepared statement "pgtide_7" already exists`,
		Detail:  `see "pgtide_7"`, Hint: `not "pgtide_70"`}
	frame, err := er.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	body := frame[5:]
	out := renameInError(body, "pgtide_7", "client_stmt")
	if out == nil {
		t.Fatal("renameInError returned nil for an error naming the statement")
	}
	var got pgproto3.ErrorResponse
	if err := got.Decode(out[5:]); err != nil {
		t.Fatalf("renamed frame does not decode: %v", err)
	}
	if got.Message != `prepared statement "client_stmt" already exists` || got.Detail != `see "client_stmt"` {
		t.Errorf("renamed: %q / %q", got.Message, got.Detail)
	}
	if got.Hint != `not "pgtide_70"` {
		t.Errorf("a longer name was rewritten too: %q", got.Hint)
	}
	if got.Code != "42P05" || got.Severity != "ERROR" {
		t.Errorf("code/severity changed: %s %s", got.Code, got.Severity)
	}
	if renameInError(body, "pgtide_9", "x") != nil {
		t.Error("an error not naming the statement was rewritten")
	}
	if renameInError(body, "pgtide_7", "") != nil {
		t.Error("an unnamed client statement was rewritten")
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestRetryableDialError(t *testing.T) {
	var ne net.Error = timeoutErr{}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pool.ServerError{Code: "57P03"}, true}, // the database system is starting up
		{&pool.ServerError{Code: "57P01"}, true},
		{&pool.ServerError{Code: "53300"}, true},
		{&pool.ServerError{Code: "28P01"}, false}, // wrong password: it stays wrong
		{&pool.ServerError{Code: "3D000"}, false},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), true},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{ne, true},
		{pool.ErrClosed, false},
		{pool.ErrWaitTimeout, false},
		{context.Canceled, false},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), false},
		{errors.New("something else"), false},
	} {
		if got := retryableDialError(tc.err); got != tc.want {
			t.Errorf("retryableDialError(%v) = %v; want %v", tc.err, got, tc.want)
		}
	}
}
