package nbd

import (
	"context"
	"encoding/binary"
	"io"

	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSteadyStateAllocations: a read or a write in the steady state
// allocates nothing in the client (request structures, completion channels
// and deadline timers are recycled). The server here is a loop that
// allocates nothing either, so that the count is the client's.
func TestSteadyStateAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector (sync.Pool drops items at random); " +
			"make test (test-host) runs this test again without -race")
	}
	d := newPipeDialer()
	go func() {
		s := accept(t, d, srvOpts{structured: true, flags: FlagSendFlush, size: 1 << 20})
		if s == nil {
			return
		}
		var h [requestSize]byte
		reply := make([]byte, 20+8+4096)
		binary.BigEndian.PutUint32(reply[0:], structuredMagic)
		binary.BigEndian.PutUint16(reply[4:], replyFlagDone)
		binary.BigEndian.PutUint16(reply[6:], replyTypeOffsetData)
		sink := make([]byte, 4096)
		var r [16]byte
		binary.BigEndian.PutUint32(r[0:], simpleMagic)
		for {
			if _, err := io.ReadFull(s.br, h[:]); err != nil {
				return
			}
			cmd := binary.BigEndian.Uint16(h[6:])
			copy(reply[8:16], h[8:16]) // cookie
			switch cmd {
			case cmdRead:
				copy(reply[20:28], h[16:24]) // offset
				binary.BigEndian.PutUint32(reply[16:], 8+4096)
				s.c.Write(reply)
			case cmdWrite:
				io.ReadFull(s.br, sink)
				fallthrough
			default:
				copy(r[8:], h[8:16])
				if cmd == cmdDisc {
					s.c.Close()
					return
				}
				s.c.Write(r[:])
			}
		}
	}()
	cfg := pipeConfig(d)
	cfg.RequestTimeout = time.Minute // deadlines in play

	c, err := Dial(context.Background(), cfg)
	require.NoError(t, err)
	defer c.Close()
	buf := make([]byte, 4096)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"read", func() error { return c.ReadAt(buf, 8192) }},
		{"write", func() error { return c.WriteAt(buf, 8192, 0) }},
	} {
		require.NoError(t, tc.call())
		allocs := testing.AllocsPerRun(200, func() {
			if err := tc.call(); err != nil {
				panic(err)
			}
		})
		// A sync.Pool emptied by a GC costs a request now and then.
		assert.Less(t, allocs, 0.5, "%s: allocations per call", tc.name)
		t.Logf("%s: %.2f allocations per call", tc.name, allocs)
	}
}
