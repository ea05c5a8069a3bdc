package config

import (
	"errors"
	"sort"
	"strconv"
	"strings"
)

// Errors is every problem found in one configuration file. Error joins them
// with newlines, each as "FILE:LINE: key: reason" (":LINE" is left out when
// the line is unknown). The elements of List are *FieldError except for I/O
// errors from Load.
type Errors struct {
	File string
	List []error
}

// FieldError is one problem, about one key.
type FieldError struct {
	Key    string // dotted TOML key, e.g. databases.app.port; "" for TOML syntax errors
	Line   int    // 1-based line in the file; 0 when unknown
	Reason string // never contains a password or SCRAM secret
}

// Error returns "key: reason" (or just the reason when there is no key).
func (e *FieldError) Error() string {
	if e.Key == "" {
		return e.Reason
	}
	return e.Key + ": " + e.Reason
}

// Error implements error.
func (e *Errors) Error() string {
	var b strings.Builder
	for i, err := range e.List {
		if i > 0 {
			b.WriteByte('\n')
		}
		prefix := e.File
		var fe *FieldError
		if errors.As(err, &fe) && fe.Line > 0 {
			if prefix == "" {
				prefix = "line " + strconv.Itoa(fe.Line)
			} else {
				prefix += ":" + strconv.Itoa(fe.Line)
			}
		}
		if prefix != "" {
			b.WriteString(prefix)
			b.WriteString(": ")
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

// Unwrap gives errors.Is/As access to every problem.
func (e *Errors) Unwrap() []error { return e.List }

// errorList collects problems while a file is decoded and validated.
type errorList struct {
	file string
	list []*FieldError
}

func (l *errorList) add(key string, line int, reason string) {
	l.list = append(l.list, &FieldError{Key: key, Line: line, Reason: reason})
}

// result returns nil or an *Errors with the problems ordered by line (those
// without a line last, in the order they were found).
func (l *errorList) result() error {
	if len(l.list) == 0 {
		return nil
	}
	sort.SliceStable(l.list, func(i, j int) bool {
		a, b := l.list[i].Line, l.list[j].Line
		if a == 0 || b == 0 {
			return a != 0 && b == 0
		}
		return a < b
	})
	out := &Errors{File: l.file, List: make([]error, len(l.list))}
	for i, e := range l.list {
		out.List[i] = e
	}
	return out
}

// levenshtein is the edit distance between a and b (bytes; keys are ASCII).
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// closest returns the candidate nearest to key, or "" when none is near
// enough to be a plausible typo.
func closest(key string, candidates []string) string {
	lk := strings.ToLower(key)
	best, bestD := "", -1
	for _, c := range candidates {
		d := levenshtein(lk, c)
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	limit := max(1, min(3, len(key)/2))
	if bestD < 0 || bestD > limit {
		return ""
	}
	return best
}
