//go:build !linux

package main

import "errors"

func setEpollWait(string) error { return nil }

func runEpollForwarder(string) error { return errors.New("-forwarder-epoll needs Linux (epoll)") }
