package qemu

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

// BenchmarkConsoleEcho times a keystroke's echo from the test guest's shell
// through OpenConsole (the shared connection) and straight on the console
// socket, one after the other on the same VM; the difference is what the
// sharing adds. Each op is one key and one backspace.
func BenchmarkConsoleEcho(b *testing.B) {
	requireQEMU(b)
	ctx := context.Background()
	d := newTestDriver(b, stateDir(b))
	s := guestSpec(b, d, guestOpts{hostname: "echo", noConfig: true})
	killVMs(b, s.UUID)
	if err := d.Start(ctx, s); err != nil {
		b.Fatalf("Start = %v", err)
	}
	defer d.Stop(ctx, s.UUID)
	waitConsole(b, d, s.UUID, "PEERSTACK-READY", 1)
	waitConsole(b, d, s.UUID, "/ # ", 1)

	// rounds types a key and a backspace n times, each time waiting for
	// the guest's echo, and returns the time per round.
	rounds := func(c net.Conn, n int) time.Duration {
		buf := make([]byte, 4096)
		var got []byte
		wait := func(key, echo byte) {
			if _, err := c.Write([]byte{key}); err != nil {
				b.Fatal(err)
			}
			got = got[:0]
			_ = c.SetReadDeadline(time.Now().Add(bootTimeout))
			for bytes.IndexByte(got, echo) < 0 {
				k, err := c.Read(buf)
				if err != nil {
					b.Fatalf("waiting for the echo of %q: %v (got %q)", key, err, got)
				}
				got = append(got, buf[:k]...)
			}
		}
		start := time.Now()
		for range n {
			wait('a', 'a')
			wait(0x7f, '\b')
		}
		return time.Since(start) / time.Duration(n)
	}
	const directRounds = 50
	direct, err := net.Dial("unix", d.Paths(s.UUID).ConsoleSocket())
	if err != nil {
		b.Fatal(err)
	}
	rounds(direct, 5) // warm up
	directPer := rounds(direct, directRounds)
	direct.Close()

	c, err := d.OpenConsole(ctx, s.UUID)
	if err != nil {
		b.Fatalf("OpenConsole = %v", err)
	}
	defer c.Close()
	rounds(c, 5)
	b.ResetTimer()
	hubPer := rounds(c, b.N)
	b.StopTimer()
	ms := func(t time.Duration) float64 { return float64(t.Microseconds()) / 1000 }
	b.ReportMetric(ms(hubPer-directPer), "ms-added/echo")
	b.Logf("key+backspace echo: %.3f ms through OpenConsole, %.3f ms on the socket directly, %.3f ms added (TCG guest)",
		ms(hubPer), ms(directPer), ms(hubPer-directPer))
}
