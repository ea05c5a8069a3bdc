package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"testing"
	"testing/iotest"
)

// chunkReader returns between 1 and max bytes per Read, cycling through a
// fixed pattern so runs are reproducible.
type chunkReader struct {
	data  []byte
	sizes []int
	reads int
}

func newChunkReader(data []byte, seed int64, maxChunk int) *chunkReader {
	r := rand.New(rand.NewSource(seed))
	sizes := make([]int, 64)
	for i := range sizes {
		sizes[i] = 1 + r.Intn(maxChunk)
	}
	return &chunkReader{data: data, sizes: sizes}
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(c.sizes[c.reads%len(c.sizes)], len(p), len(c.data))
	c.reads++
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func msg(typ byte, body []byte) []byte {
	b := make([]byte, HeaderLen+len(body))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	copy(b[HeaderLen:], body)
	return b
}

type frame struct {
	typ  byte
	body []byte
}

func sampleFrames() []frame {
	big := bytes.Repeat([]byte("0123456789abcdef"), 300) // 4800 bytes: above the 512 buffer
	return []frame{
		{'1', nil},
		{'Z', []byte{'I'}},
		{'D', big},
		{'C', []byte("SELECT 1\x00")},
		{'n', nil},
		{'D', big[:511]},
		{'D', big[:512]},
		{'T', []byte("x")},
	}
}

func encodeFrames(fs []frame) []byte {
	var out []byte
	for _, f := range fs {
		out = append(out, msg(f.typ, f.body)...)
	}
	return out
}

func readAll(t *testing.T, r *Reader, maxBody int) []frame {
	t.Helper()
	var got []frame
	for {
		typ, body, err := r.ReadMessage(maxBody)
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatalf("ReadMessage after %d frames: %v", len(got), err)
		}
		got = append(got, frame{typ, bytes.Clone(body)})
	}
}

func TestReadMessageAcrossChunkings(t *testing.T) {
	want := sampleFrames()
	data := encodeFrames(want)
	for _, maxChunk := range []int{1, 2, 3, 5, 7} {
		for seed := range int64(20) {
			r := NewReader(newChunkReader(data, seed, maxChunk), 512)
			got := readAll(t, r, 1<<20)
			if len(got) != len(want) {
				t.Fatalf("chunk<=%d seed %d: %d frames, want %d", maxChunk, seed, len(got), len(want))
			}
			for i := range want {
				if got[i].typ != want[i].typ || !bytes.Equal(got[i].body, want[i].body) {
					t.Fatalf("chunk<=%d seed %d: frame %d = %q/%d bytes, want %q/%d bytes",
						maxChunk, seed, i, got[i].typ, len(got[i].body), want[i].typ, len(want[i].body))
				}
			}
			if r.Len() != 0 {
				t.Fatalf("%d bytes left buffered", r.Len())
			}
		}
	}
}

func TestReadMessageStdReaders(t *testing.T) {
	want := sampleFrames()
	data := encodeFrames(want)
	for name, rd := range map[string]io.Reader{
		"OneByte": iotest.OneByteReader(bytes.NewReader(data)),
		"Half":    iotest.HalfReader(bytes.NewReader(data)),
		"DataErr": iotest.DataErrReader(bytes.NewReader(data)), // data and EOF together
		"Whole":   bytes.NewReader(data),
	} {
		got := readAll(t, NewReader(rd, 512), 1<<20)
		if len(got) != len(want) {
			t.Fatalf("%s: %d frames, want %d", name, len(got), len(want))
		}
	}
}

func TestFillCompactsAndGrows(t *testing.T) {
	data := bytes.Repeat([]byte{'x'}, 2000)
	r := NewReader(newChunkReader(data, 1, 7), 512)
	total := 0
	for total < len(data) {
		if err := r.Fill(); err != nil {
			t.Fatal(err)
		}
		n := r.Len()
		if n == 0 {
			t.Fatal("Fill returned nil with nothing read")
		}
		r.Discard(n)
		total += n
	}
	if r.Cap() != 512 {
		t.Fatalf("buffer grew to %d although it was drained each time", r.Cap())
	}
	if err := r.Fill(); err != io.EOF {
		t.Fatalf("Fill at end = %v, want io.EOF", err)
	}
	// Never discarding: Fill must grow the buffer rather than fail.
	r = NewReader(bytes.NewReader(data), 512)
	for r.Len() < len(data) {
		if err := r.Fill(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(r.Buffered(), data) {
		t.Fatal("buffered bytes differ from the input")
	}
}

func TestEnsureGrowsPastBuffer(t *testing.T) {
	data := make([]byte, 5000)
	for i := range data {
		data[i] = byte(i)
	}
	r := NewReader(newChunkReader(data, 3, 7), 512)
	if err := r.Ensure(3); err != nil {
		t.Fatal(err)
	}
	r.Discard(3) // r.r > 0 when growing
	if err := r.Ensure(4000); err != nil {
		t.Fatal(err)
	}
	if r.Cap() < 4000 || r.Len() < 4000 {
		t.Fatalf("cap %d len %d after Ensure(4000)", r.Cap(), r.Len())
	}
	if !bytes.Equal(r.Buffered()[:4000], data[3:4003]) {
		t.Fatal("bytes corrupted by growing")
	}
	r.Discard(r.Len())
	// Ensure more than the rest of the stream: ErrUnexpectedEOF, with the
	// rest still buffered.
	rest := len(data) - 3 - 4000
	if err := r.Ensure(rest + 1); err != io.ErrUnexpectedEOF {
		t.Fatalf("Ensure past end = %v, want io.ErrUnexpectedEOF", err)
	}
	if r.Len() != rest || !bytes.Equal(r.Buffered(), data[4003:]) {
		t.Fatalf("after a short Ensure %d bytes buffered, want the %d left", r.Len(), rest)
	}
	r.Discard(r.Len())
	if err := r.Ensure(1); err != io.EOF {
		t.Fatalf("Ensure at clean end = %v, want io.EOF", err)
	}
}

func TestEnsureCompactsNearEnd(t *testing.T) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	r := NewReader(bytes.NewReader(data), 512)
	if err := r.Ensure(500); err != nil {
		t.Fatal(err)
	}
	r.Discard(490) // 10+ bytes left near the end of the buffer
	if err := r.Ensure(300); err != nil {
		t.Fatal(err)
	}
	if r.Cap() != 512 {
		t.Fatalf("buffer grew to %d; compaction would have sufficed", r.Cap())
	}
	if !bytes.Equal(r.Buffered()[:300], data[490:790]) {
		t.Fatal("bytes corrupted by compaction")
	}
}

func TestShrink(t *testing.T) {
	big := bytes.Repeat([]byte{'y'}, 10000)
	data := append(msg('D', big), msg('Z', []byte{'I'})...)
	r := NewReader(bytes.NewReader(data), 1024)
	if _, _, err := r.ReadMessage(1 << 20); err != nil {
		t.Fatal(err)
	}
	if r.Cap() < 10005 {
		t.Fatalf("cap %d after a 10005-byte frame", r.Cap())
	}
	if err := r.Ensure(1); err != nil {
		t.Fatal(err)
	}
	r.Shrink() // not empty: must keep the bytes
	if r.Len() == 0 || r.Cap() < 1024 {
		t.Fatal("Shrink dropped buffered bytes")
	}
	typ, body, err := r.ReadMessage(10)
	if err != nil || typ != 'Z' || string(body) != "I" {
		t.Fatalf("ReadMessage after Shrink of a non-empty buffer: %q %q %v", typ, body, err)
	}
	r.Shrink()
	if r.Cap() != 1024 {
		t.Fatalf("cap %d after Shrink of an empty buffer, want 1024", r.Cap())
	}
	// A Reader that never grew keeps its buffer.
	r2 := NewReader(bytes.NewReader(nil), 100) // below the 512 floor
	if r2.Cap() != 512 {
		t.Fatalf("minimum buffer = %d, want 512", r2.Cap())
	}
	r2.Shrink()
	if r2.Cap() != 512 {
		t.Fatal("Shrink changed an initial-size buffer")
	}
	r2.Grow(4096)
	if r2.Cap() != 4096 {
		t.Fatalf("Grow(4096) gave %d", r2.Cap())
	}
	r2.Grow(10)
	if r2.Cap() != 4096 {
		t.Fatal("Grow shrank the buffer")
	}
}

func TestHeaderAndCheckLen(t *testing.T) {
	typ, n := Header([]byte{'D', 0, 0, 0, 4})
	if typ != 'D' || n != 5 {
		t.Fatalf("Header = %q %d", typ, n)
	}
	for _, tc := range []struct {
		frameLen, max int
		ok            bool
	}{
		{5, 0, true},      // empty body
		{4, 100, false},   // length 3: impossible
		{1, 100, false},   // length 0
		{0, 100, false},   // length -1 (0xffffffff)
		{105, 100, true},  // body exactly max
		{106, 100, false}, // one over
		{-1 << 31, 100, false},
	} {
		err := CheckLen(tc.frameLen, tc.max)
		if (err == nil) != tc.ok {
			t.Errorf("CheckLen(%d, %d) = %v, want ok=%v", tc.frameLen, tc.max, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadLength) {
			t.Errorf("CheckLen error %v does not wrap ErrBadLength", err)
		}
	}
	// A length with the top bit set is negative, not huge.
	_, n = Header([]byte{'D', 0xff, 0xff, 0xff, 0xff})
	if CheckLen(n, 1<<30) == nil {
		t.Fatal("length 0xffffffff accepted")
	}
	_, n = Header([]byte{'D', 0x80, 0, 0, 0})
	if n >= 0 && CheckLen(n, 1<<30) == nil {
		t.Fatal("length 0x80000000 accepted")
	}
}

func TestReadMessageRejectsBadLengths(t *testing.T) {
	for _, data := range [][]byte{
		{'D', 0, 0, 0, 3},
		{'D', 0xff, 0xff, 0xff, 0xff},
		{'D', 0, 0, 1, 0}, // body 252 > max 100
	} {
		r := NewReader(bytes.NewReader(data), 512)
		if _, _, err := r.ReadMessage(100); !errors.Is(err, ErrBadLength) {
			t.Errorf("%x: err = %v, want ErrBadLength", data, err)
		}
		if r.Cap() > 512 {
			t.Errorf("%x: buffer grew to %d for a rejected length", data, r.Cap())
		}
	}
	// Truncated frames.
	for _, data := range [][]byte{{'D'}, {'D', 0, 0}, {'D', 0, 0, 0, 9, 'a'}} {
		r := NewReader(bytes.NewReader(data), 512)
		if _, _, err := r.ReadMessage(100); err != io.ErrUnexpectedEOF {
			t.Errorf("%x: err = %v, want io.ErrUnexpectedEOF", data, err)
		}
	}
}

// A header that claims far more than arrives costs memory in proportion to
// the bytes that arrived, not to the claim (DESIGN.md invariant 11).
func TestEnsureGrowsWithArrivingBytes(t *testing.T) {
	msg := []byte{'Q', 0x3f, 0xff, 0xff, 0xf0}
	msg = append(msg, make([]byte, 100_000)...)
	r := NewReader(bytes.NewReader(msg), 4096)
	err := r.Ensure(1 << 30)
	if err == nil {
		t.Fatal("Ensure(1 GiB) over 100 kB of input: want an error")
	}
	if r.Cap() > 4*len(msg) {
		t.Fatalf("buffer grew to %d bytes for %d bytes of input", r.Cap(), len(msg))
	}
	if r.Len() != len(msg) {
		t.Fatalf("buffered %d bytes, want %d", r.Len(), len(msg))
	}
}

// OnGrow sees every growth before it happens and can stop it: the read
// that needed the room fails with its error and the buffer keeps its size.
func TestOnGrowBudgets(t *testing.T) {
	msg := make([]byte, 100_000)
	r := NewReader(bytes.NewReader(msg), 4096)
	var asked []int
	stop := errors.New("no room")
	r.OnGrow = func(size int) error {
		asked = append(asked, size)
		if size > 32<<10 {
			return stop
		}
		return nil
	}
	err := r.Ensure(len(msg))
	if !errors.Is(err, stop) {
		t.Fatalf("Ensure past the budget: %v, want the OnGrow error", err)
	}
	if r.Cap() > 32<<10 {
		t.Fatalf("buffer grew to %d bytes past the refusal", r.Cap())
	}
	if len(asked) == 0 || asked[0] != 8192 {
		t.Fatalf("OnGrow asked for %v, want doublings from 8192", asked)
	}
}
