package proxy

import (
	"errors"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtide/pgtide/pool"
	"github.com/pgtide/pgtide/proxy/wire"
)

// SQLSTATE codes pgtide itself reports to clients.
const (
	codeProtocolViolation   = "08P01"
	codeOutOfMemory         = "53200"
	codeTooManyConnections  = "53300"
	codeInvalidPassword     = "28P01"
	codeInvalidAuthSpec     = "28000"
	codeUnknownDatabase     = "3D000"
	codeQueryCanceled       = "57014"
	codeAdminShutdown       = "57P01"
	codeCannotConnectNow    = "57P03"
	codeFeatureNotSupported = "0A000"
	codeInFailedTxn         = "25P02"
	codeTransactionTimeout  = "25P04" // PostgreSQL 17's transaction_timeout
	codeConnectionFailure   = "08006"
	codeServerUnavailable   = "08001"
	codeSyntaxError         = "42601"
)

// Error classes at the edge of a session: who ended it decides what is
// logged and whether the server can be reused.
var (
	errClientGone = errors.New("client disconnected")
	errServerGone = errors.New("server connection lost")
	errProtocol   = errors.New("protocol violation")
	// errWaitCancelled: the client's cancel request ended its query's
	// wait for a server. Not the session's end: the query is answered
	// 57014 as PostgreSQL answers a cancelled one (answerCancelled).
	errWaitCancelled = errors.New("wait for a server cancelled by the client")
)

// clientError is an error the client is told about before its connection
// ends; Code is the SQLSTATE.
type clientError struct {
	Code, Msg string
}

func (e *clientError) Error() string { return e.Msg + " (SQLSTATE " + e.Code + ")" }

// settingRefused is a server's refusal of a setting the client asked for
// (syncParams). PostgreSQL refuses such a startup setting with its error
// whole, detail and hint included, as FATAL: frame is the server's
// ErrorResponse made so.
type settingRefused struct {
	*clientError
	frame []byte
}

func (e *settingRefused) Unwrap() error { return e.clientError }

func newSettingRefused(se *pool.ServerError) error {
	ce := &clientError{se.Code, se.Message}
	var er pgproto3.ErrorResponse
	if len(se.Raw) < wire.HeaderLen || er.Decode(se.Raw[wire.HeaderLen:]) != nil {
		return ce
	}
	er.Severity, er.SeverityUnlocalized = "FATAL", "FATAL"
	frame, err := er.Encode(nil)
	if err != nil {
		return ce
	}
	return &settingRefused{clientError: ce, frame: frame}
}

// fatalFrame is the FATAL ErrorResponse that tells the client err, whose
// clientError is ce.
func fatalFrame(err error, ce *clientError) []byte {
	var sr *settingRefused
	if errors.As(err, &sr) {
		return sr.frame
	}
	return wire.ErrorFrame("FATAL", ce.Code, ce.Msg)
}
