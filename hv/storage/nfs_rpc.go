package storage

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// ONC RPC (RFC 5531) over TCP with record marking, and the XDR (RFC 4506)
// encoding it carries: just enough for the portmapper, MOUNT v3 and NFSv3
// calls NFSClient makes.

// Program numbers and versions.
const (
	progPortmap = 100000
	progNFS     = 100003
	progMount   = 100005
	vers2       = 2
	vers3       = 3
	protoTCP    = 6
	portmapPort = 111
)

// maxRecord bounds a reply we are willing to read.
const maxRecord = 1 << 20

// xdrEnc appends XDR items to a buffer.
type xdrEnc struct{ b []byte }

func (e *xdrEnc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }

func (e *xdrEnc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }

func (e *xdrEnc) opaque(p []byte) {
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
	for len(e.b)%4 != 0 {
		e.b = append(e.b, 0)
	}
}

func (e *xdrEnc) str(s string) { e.opaque([]byte(s)) }

// xdrDec reads XDR items; the first error sticks and later reads return
// zero values.
type xdrDec struct {
	b   []byte
	err error
}

var errShortXDR = errors.New("truncated XDR reply")

func (d *xdrDec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errShortXDR
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *xdrDec) u32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *xdrDec) u64() uint64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

// opaque reads variable-length opaque data of at most max bytes.
func (d *xdrDec) opaque(max int) []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if int64(n) > int64(max) {
		d.err = fmt.Errorf("XDR opaque of %d bytes exceeds %d", n, max)
		return nil
	}
	p := d.take(int(n))
	d.take((4 - int(n)%4) % 4)
	if p == nil {
		return nil
	}
	return append([]byte(nil), p...)
}

// rpcConn is one TCP connection to one RPC program.
type rpcConn struct {
	c    net.Conn
	r    *bufio.Reader
	xid  atomic.Uint32
	uid  uint32
	gid  uint32
	addr string
}

// dialRPC connects to addr with dial under ctx.
func dialRPC(ctx context.Context, dial DialFunc, addr string, uid, gid uint32) (*rpcConn, error) {
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	rc := &rpcConn{c: c, r: bufio.NewReader(c), uid: uid, gid: gid, addr: addr}
	rc.xid.Store(uint32(time.Now().UnixNano()))
	return rc, nil
}

func (rc *rpcConn) Close() error { return rc.c.Close() }

// RPCError is a call the server refused at the RPC layer (not a program
// status such as NFS3ERR_NOENT).
type RPCError struct {
	Prog, Vers, Proc uint32
	Msg              string
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("rpc program %d v%d procedure %d: %s", e.Prog, e.Vers, e.Proc, e.Msg)
}

// call sends one call and returns a decoder positioned at the results.
func (rc *rpcConn) call(ctx context.Context, prog, vers, proc uint32, args []byte) (*xdrDec, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultNFSTimeout)
	}
	if err := rc.c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = rc.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	xid := rc.xid.Add(1)
	var e xdrEnc
	e.b = make([]byte, 4, 128+len(args)) // record mark placeholder
	e.u32(xid)
	e.u32(0) // CALL
	e.u32(2) // RPC version
	e.u32(prog)
	e.u32(vers)
	e.u32(proc)
	// AUTH_SYS credential.
	var cred xdrEnc
	cred.u32(0) // stamp
	cred.str("peerstack")
	cred.u32(rc.uid)
	cred.u32(rc.gid)
	cred.u32(1)
	cred.u32(rc.gid)
	e.u32(1) // AUTH_SYS
	e.opaque(cred.b)
	e.u32(0) // verifier AUTH_NONE
	e.u32(0)
	e.b = append(e.b, args...)
	binary.BigEndian.PutUint32(e.b[:4], 0x80000000|uint32(len(e.b)-4))
	if _, err := rc.c.Write(e.b); err != nil {
		return nil, rc.ioErr(ctx, err)
	}
	for {
		rec, err := rc.readRecord()
		if err != nil {
			return nil, rc.ioErr(ctx, err)
		}
		d := &xdrDec{b: rec}
		if d.u32() != xid {
			continue // a stale reply
		}
		return rc.reply(d, prog, vers, proc)
	}
}

func (rc *rpcConn) ioErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", rc.addr, ctx.Err())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s: %w (%v)", rc.addr, context.DeadlineExceeded, err)
	}
	return fmt.Errorf("%s: %w", rc.addr, err)
}

func (rc *rpcConn) readRecord() ([]byte, error) {
	var rec []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(rc.r, hdr[:]); err != nil {
			return nil, err
		}
		h := binary.BigEndian.Uint32(hdr[:])
		n := int(h & 0x7fffffff)
		if len(rec)+n > maxRecord {
			return nil, fmt.Errorf("RPC record larger than %d bytes", maxRecord)
		}
		start := len(rec)
		rec = append(rec, make([]byte, n)...)
		if _, err := io.ReadFull(rc.r, rec[start:]); err != nil {
			return nil, err
		}
		if h&0x80000000 != 0 {
			return rec, nil
		}
	}
}

// reply checks an RPC reply header after the xid.
func (rc *rpcConn) reply(d *xdrDec, prog, vers, proc uint32) (*xdrDec, error) {
	fail := func(msg string, args ...any) (*xdrDec, error) {
		return nil, &RPCError{Prog: prog, Vers: vers, Proc: proc, Msg: fmt.Sprintf(msg, args...)}
	}
	if d.u32() != 1 { // REPLY
		return fail("not a reply")
	}
	switch d.u32() {
	case 0: // MSG_ACCEPTED
	case 1: // MSG_DENIED
		if d.u32() == 0 {
			return fail("RPC version mismatch")
		}
		return fail("authentication failed (auth_stat %d)", d.u32())
	default:
		return fail("bad reply status")
	}
	d.u32()       // verifier flavor
	d.opaque(400) // verifier body
	st := d.u32() // accept_stat
	if d.err != nil {
		return nil, fmt.Errorf("rpc program %d: %w", prog, d.err)
	}
	switch st {
	case 0:
		return d, nil
	case 1:
		return fail("program unavailable")
	case 2:
		lo, hi := d.u32(), d.u32()
		return fail("program version mismatch (server has %d-%d)", lo, hi)
	case 3:
		return fail("procedure unavailable")
	case 4:
		return fail("garbage arguments")
	default:
		return fail("system error (accept_stat %d)", st)
	}
}
