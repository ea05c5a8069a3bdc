// Package integration holds pgtide's end-to-end tests: they start a real
// PostgreSQL (see package pgtest), build and run the pgtide binary, and talk
// to it with real clients (psql, pgx, psycopg2).
//
// Run with: go test -race ./integration/...
package integration
