package faults

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// nfsServer is the NAS's NFS server: stopped (SIGSTOP) and resumed
// (SIGCONT) by the nfs nemesis, with proof from a client in a host's
// namespace both ways.
type nfsServer struct {
	pid  int
	addr string // the NFS port, addr:2049
}

// procState is the state letter of pid in /proc (T: stopped), or "" when
// it does not exist.
func procState(pid int) (state, comm string) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", ""
	}
	s := string(stat)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", ""
	}
	f := strings.Fields(s[end+1:])
	if len(f) == 0 {
		return "", ""
	}
	return f[0], s[open+1 : end]
}

// dialIn returns a dial function that opens its connections inside
// network namespace ns: the NFS client of the proofs runs in a host's
// namespace, as the daemons do.
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			// The thread is switched into ns for the socket() call and
			// back; if it cannot switch back it stays locked, so the
			// runtime discards it.
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				runtime.UnlockOSThread()
				ch <- res{err: err}
				return
			}
			defer orig.Close()
			h, err := netns.GetFromName(ns)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- res{err: fmt.Errorf("namespace %s: %w", ns, err)}
				return
			}
			defer h.Close()
			if err := netns.Set(h); err != nil {
				runtime.UnlockOSThread()
				ch <- res{err: fmt.Errorf("enter %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if serr := netns.Set(orig); serr != nil {
				if c != nil {
					c.Close()
				}
				ch <- res{err: errors.Join(err, fmt.Errorf("leave %s: %w", ns, serr))}
				return
			}
			runtime.UnlockOSThread()
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// errNoAnswer is a probe that connected and sent its call but got no
// answer.
var errNoAnswer = errors.New("no answer to a NULL call")

// unanswered reports whether a probe's error is that of a stopped server:
// connected, the call sent, no answer until the deadline.
func unanswered(err error) bool {
	return errors.Is(err, errNoAnswer) && errors.Is(err, os.ErrDeadlineExceeded)
}

// probe sends an NFSv3 NULL call (the RPC ping) to the server's port
// 2049 from namespace ns and waits at most d for an accepted answer.
func (s nfsServer) probe(ctx context.Context, ns string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	c, err := dialIn(ns)(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("connect %s: %w", s.addr, err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	const xid = 0x70e57a11
	// record mark (last fragment, 40 bytes), xid, CALL, RPC 2, NFS
	// (100003) v3, proc 0 (NULL), AUTH_NONE credential and verifier.
	call := []uint32{0x80000000 | 40, xid, 0, 2, 100003, 3, 0, 0, 0, 0, 0}
	buf := make([]byte, 0, 4*len(call))
	for _, v := range call {
		buf = binary.BigEndian.AppendUint32(buf, v)
	}
	if _, err := c.Write(buf); err != nil {
		return fmt.Errorf("NULL call to %s: %w", s.addr, err)
	}
	// record mark, xid, REPLY, MSG_ACCEPTED, verifier (flavor, empty
	// body), SUCCESS.
	var rep [28]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return fmt.Errorf("%w at %s: %w", errNoAnswer, s.addr, err)
	}
	var w [7]uint32
	for i := range w {
		w[i] = binary.BigEndian.Uint32(rep[4*i:])
	}
	if w[1] != xid || w[2] != 1 || w[3] != 0 || w[5] != 0 || w[6] != 0 {
		return fmt.Errorf("NULL call at %s answered %x, not an accepted reply", s.addr, rep)
	}
	return nil
}

// stopNFS stops the NFS server, waits until /proc shows it stopped, and
// proves that a client in host from's namespace cannot use the share.
func (n *nemesis) stopNFS(ctx context.Context, from int) (string, error) {
	s := n.nfs
	if err := syscall.Kill(s.pid, syscall.SIGSTOP); err != nil {
		return "", fmt.Errorf("SIGSTOP NFS server %d: %w", s.pid, err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		st, comm := procState(s.pid)
		if st == "T" || st == "t" {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("NFS server %d (%s) in state %q a second after SIGSTOP", s.pid, comm, st)
		}
		_ = syscall.Kill(s.pid, syscall.SIGSTOP)
		time.Sleep(50 * time.Millisecond)
	}
	h := n.b.Host(from)
	t0 := time.Now()
	// A stopped server's kernel still completes the TCP handshake: the
	// proof is a connection made whose call times out, not any error (a
	// refused or unroutable connection would prove a different fault).
	err := s.probe(ctx, h.NS, 3*time.Second)
	if err == nil {
		return "", fmt.Errorf("the NFS server is stopped, yet %s answered a client in %s", s.addr, h.Name)
	}
	if !unanswered(err) {
		return "", fmt.Errorf("the NFS server is stopped; a client in %s should connect to %s and wait in vain, but: %w", h.Name, s.addr, err)
	}
	return fmt.Sprintf("NFS server (pid %d) stopped; a client in %s got no NFS answer from %s (%.1fs: %v)",
		s.pid, h.Name, s.addr, time.Since(t0).Seconds(), err), nil
}

// contNFS resumes the NFS server and proves a client in host from's
// namespace uses the share again (within 20 s).
func (n *nemesis) contNFS(ctx context.Context, from int) (string, error) {
	s := n.nfs
	if err := syscall.Kill(s.pid, syscall.SIGCONT); err != nil {
		return "", fmt.Errorf("SIGCONT NFS server %d: %w", s.pid, err)
	}
	h := n.b.Host(from)
	t0 := time.Now()
	for {
		err := s.probe(ctx, h.NS, 5*time.Second)
		if err == nil {
			return fmt.Sprintf("healed: %s answered a client in %s after %.2fs", s.addr, h.Name, time.Since(t0).Seconds()), nil
		}
		if time.Since(t0) > 20*time.Second || ctx.Err() != nil {
			st, _ := procState(s.pid)
			return "", fmt.Errorf("NFS server resumed (state %q), yet a client in %s gets no answer from %s for 20 s: %w", st, h.Name, s.addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nfsStopped reports whether the NFS server is stopped (for the watch
// while the fault holds).
func (n *nemesis) nfsStopped() bool {
	st, _ := procState(n.nfs.pid)
	return st == "T" || st == "t"
}
