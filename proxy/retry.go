package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/pgtide/pgtide/pool"
)

// acquire borrows from p, retrying while the server cannot be reached for
// a reason that passes (PostgreSQL restarting, connection refused, too many
// connections at the server), until ctx ends. Authentication and other
// errors the server gives for good are returned at once. This is what lets
// clients ride out a PostgreSQL restart instead of failing. now is the
// caller's clock; waited reports that the borrow did not end at once
// (pool.AcquireAt).
func acquire(ctx context.Context, p *pool.Pool, now time.Time) (sc *pool.Conn, waited bool, err error) {
	backoff := 50 * time.Millisecond
	for {
		var w bool
		sc, w, err = p.AcquireAt(ctx, now)
		waited = waited || w
		if err == nil || !retryableDialError(err) {
			return sc, waited, err
		}
		waited = true
		var intr <-chan struct{} // a cancel request for the waiting query
		if ic, ok := ctx.(pool.Interruptible); ok {
			intr = ic.Interrupt()
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, waited, err
		case <-intr:
			t.Stop()
			return nil, waited, pool.ErrWaitInterrupted
		case <-t.C:
		}
		now = time.Now() // the next try's clock: after the backoff
		backoff = min(backoff*2, time.Second)
	}
}

func retryableDialError(err error) bool {
	if errors.Is(err, pool.ErrClosed) || errors.Is(err, pool.ErrWaitTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var se *pool.ServerError
	if errors.As(err, &se) {
		switch se.Code {
		case "57P03", "53300", "57P01", "57P02":
			return true // starting up / shutting down / too many connections
		}
		return false
	}
	var ae *pool.AuthError
	if errors.As(err, &ae) {
		return false // pgtide's own refusal: it would refuse again
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}
