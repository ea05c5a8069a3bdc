package proxy

import (
	"errors"
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
	codeConnectionFailure   = "08006"
	codeServerUnavailable   = "08001"
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
