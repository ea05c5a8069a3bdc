package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader frames arbitrary bytes delivered in arbitrary chunks and checks
// the result against a direct parse of the same bytes: same frames, the
// same error at the same place, no panic.
func FuzzReader(f *testing.F) {
	f.Add([]byte{'Z', 0, 0, 0, 5, 'I'}, uint8(1), int64(0))
	f.Add(append(msg('D', bytes.Repeat([]byte{'a'}, 600)), msg('C', []byte("SELECT 1\x00"))...), uint8(7), int64(3))
	f.Add([]byte{'D', 0xff, 0xff, 0xff, 0xff}, uint8(3), int64(1))
	f.Add([]byte{'D', 0, 0, 0, 3, 'x'}, uint8(2), int64(2))
	f.Add([]byte{'D', 0, 0, 0, 9, 'a', 'b'}, uint8(5), int64(4))
	f.Add([]byte{'1', 0, 0, 0, 4, '2', 0, 0, 0, 4, 'n', 0, 0}, uint8(4), int64(5))
	f.Fuzz(func(t *testing.T, data []byte, maxChunk uint8, seed int64) {
		const maxBody = 1 << 16
		chunk := int(maxChunk%7) + 1

		// Reference parse.
		type fr struct {
			typ  byte
			body []byte
		}
		var want []fr
		var wantErr error
		rest := data
		for {
			if len(rest) == 0 {
				wantErr = io.EOF
				break
			}
			if len(rest) < HeaderLen {
				wantErr = io.ErrUnexpectedEOF
				break
			}
			typ, n := Header(rest)
			if CheckLen(n, maxBody) != nil {
				wantErr = ErrBadLength
				break
			}
			if n > len(rest) {
				wantErr = io.ErrUnexpectedEOF
				break
			}
			want = append(want, fr{typ, rest[HeaderLen:n]})
			rest = rest[n:]
		}

		r := NewReader(newChunkReader(data, seed, chunk), 512)
		consumed := 0
		for i := 0; ; i++ {
			typ, body, err := r.ReadMessage(maxBody)
			if err != nil {
				if i != len(want) {
					t.Fatalf("error %v after %d frames, want %d frames", err, i, len(want))
				}
				if !errors.Is(err, wantErr) {
					t.Fatalf("error %v, want %v", err, wantErr)
				}
				break
			}
			if i >= len(want) {
				t.Fatalf("extra frame %d", i)
			}
			if typ != want[i].typ || !bytes.Equal(body, want[i].body) {
				t.Fatalf("frame %d: %q len %d, want %q len %d", i, typ, len(body), want[i].typ, len(want[i].body))
			}
			consumed += HeaderLen + len(body)
			if r.Len() < 0 || r.Len() > r.Cap() {
				t.Fatalf("Len %d outside [0, Cap %d]", r.Len(), r.Cap())
			}
		}
		if wantErr == io.EOF && consumed != len(data) {
			t.Fatalf("consumed %d of %d bytes", consumed, len(data))
		}
		if r.Cap() > 512 && r.Cap() > 2*(maxBody+HeaderLen) {
			t.Fatalf("buffer grew to %d with maxBody %d", r.Cap(), maxBody)
		}
	})
}
