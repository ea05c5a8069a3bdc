package wire

import (
	"encoding/binary"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Builders and parsers for the few messages pgtide writes itself or reads
// out of a stream it otherwise forwards untouched.

// ErrorFrame encodes an ErrorResponse as PostgreSQL would send it.
func ErrorFrame(severity, code, msg string) []byte {
	b, _ := (&pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg}).Encode(nil)
	return b
}

// NoticeFrame encodes a NoticeResponse of severity NOTICE and SQLSTATE
// 00000 (successful_completion), as PostgreSQL sends a plain notice.
func NoticeFrame(msg string) []byte {
	b, _ := (&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: msg}).Encode(nil)
	return b
}

// AppendFrame appends a message of type typ whose body is parts, in order.
func AppendFrame(dst []byte, typ byte, parts ...[]byte) []byte {
	n := 4
	for _, p := range parts {
		n += len(p)
	}
	dst = append(dst, typ, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}

// ParseParameterStatus returns the name and value of a ParameterStatus
// body, or "" when it is malformed.
func ParseParameterStatus(body []byte) (string, string) {
	i := indexZero(body)
	if i < 0 {
		return "", ""
	}
	j := indexZero(body[i+1:])
	if j < 0 {
		return "", ""
	}
	return string(body[:i]), string(body[i+1 : i+1+j])
}

// ParseDataRow returns a DataRow body's columns as text (NULL as "").
func ParseDataRow(body []byte) ([]string, bool) {
	if len(body) < 2 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(body))
	body = body[2:]
	row := make([]string, n)
	for i := range row {
		if len(body) < 4 {
			return nil, false
		}
		l := int(int32(binary.BigEndian.Uint32(body)))
		body = body[4:]
		if l < 0 {
			continue
		}
		if l > len(body) {
			return nil, false
		}
		row[i] = string(body[:l])
		body = body[l:]
	}
	return row, true
}

func indexZero(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}
