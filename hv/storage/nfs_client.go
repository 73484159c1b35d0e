package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DialFunc opens a network connection (net.Dialer.DialContext's shape).
// Tests pass one that dials inside a network namespace.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// defaultNFSTimeout bounds an NFS operation whose context has no deadline.
const defaultNFSTimeout = 30 * time.Second

// NFSClient makes the NFSv3 calls qemu-img cannot: look names up, make
// directories and remove files and directories, on one server, as
// AUTH_SYS uid/gid 0 (what qemu-img through libnfs uses when run as root).
// Each operation mounts the longest existing prefix of its directory with
// MOUNT v3, walks the rest with LOOKUP, and unmounts.
type NFSClient struct {
	server string
	dial   DialFunc
}

// NewNFSClient returns a client of server (a host name or IP). dial nil
// means net.Dialer, from a reserved source port when running as root
// (servers that export with "secure" require one).
func NewNFSClient(server string, dial DialFunc) *NFSClient {
	if dial == nil {
		dial = dialReservedPort
	}
	return &NFSClient{server: server, dial: dial}
}

// NFSStatus is an NFSv3 or MOUNT v3 status code other than OK. It matches
// fs.ErrNotExist, fs.ErrExist and fs.ErrPermission with errors.Is.
type NFSStatus uint32

// NFSv3 status codes this package looks at (RFC 1813).
const (
	NFS3ErrPerm     NFSStatus = 1
	NFS3ErrNoEnt    NFSStatus = 2
	NFS3ErrIO       NFSStatus = 5
	NFS3ErrAcces    NFSStatus = 13
	NFS3ErrExist    NFSStatus = 17
	NFS3ErrNotDir   NFSStatus = 20
	NFS3ErrIsDir    NFSStatus = 21
	NFS3ErrNoSpc    NFSStatus = 28
	NFS3ErrRoFS     NFSStatus = 30
	NFS3ErrNotEmpty NFSStatus = 66
	NFS3ErrStale    NFSStatus = 70
)

var nfsStatusNames = map[NFSStatus]string{
	1: "NFS3ERR_PERM", 2: "NFS3ERR_NOENT", 5: "NFS3ERR_IO", 6: "NFS3ERR_NXIO", 13: "NFS3ERR_ACCES",
	17: "NFS3ERR_EXIST", 18: "NFS3ERR_XDEV", 19: "NFS3ERR_NODEV", 20: "NFS3ERR_NOTDIR", 21: "NFS3ERR_ISDIR",
	22: "NFS3ERR_INVAL", 27: "NFS3ERR_FBIG", 28: "NFS3ERR_NOSPC", 30: "NFS3ERR_ROFS", 31: "NFS3ERR_MLINK",
	63: "NFS3ERR_NAMETOOLONG", 66: "NFS3ERR_NOTEMPTY", 69: "NFS3ERR_DQUOT", 70: "NFS3ERR_STALE",
	71: "NFS3ERR_REMOTE", 10001: "NFS3ERR_BADHANDLE", 10002: "NFS3ERR_NOT_SYNC", 10003: "NFS3ERR_BAD_COOKIE",
	10004: "NFS3ERR_NOTSUPP", 10005: "NFS3ERR_TOOSMALL", 10006: "NFS3ERR_SERVERFAULT", 10007: "NFS3ERR_BADTYPE",
	10008: "NFS3ERR_JUKEBOX",
}

func (s NFSStatus) Error() string {
	if n, ok := nfsStatusNames[s]; ok {
		return n
	}
	return "NFS3ERR_" + strconv.Itoa(int(s))
}

// Is matches the fs sentinels.
func (s NFSStatus) Is(target error) bool {
	switch target {
	case fs.ErrNotExist:
		return s == NFS3ErrNoEnt
	case fs.ErrExist:
		return s == NFS3ErrExist
	case fs.ErrPermission:
		return s == NFS3ErrPerm || s == NFS3ErrAcces
	}
	return false
}

// NFSAttr is what LOOKUP tells about a file.
type NFSAttr struct {
	Dir  bool
	Mode uint32
	Size int64
}

// nfsSession is the connections of one operation.
type nfsSession struct {
	cl     *NFSClient
	mnt    *rpcConn
	nfs    *rpcConn
	mounts []string
}

// session looks up the MOUNT and NFS ports and connects to both.
func (cl *NFSClient) session(ctx context.Context) (*nfsSession, error) {
	pm, err := dialRPC(ctx, cl.dial, net.JoinHostPort(cl.server, strconv.Itoa(portmapPort)), 0, 0)
	if err != nil {
		return nil, fmt.Errorf("portmapper: %w", err)
	}
	defer pm.Close()
	mntPort, err := getport(ctx, pm, progMount, vers3, "MOUNT v3 (mountd)")
	if err != nil {
		return nil, err
	}
	nfsPort, err := getport(ctx, pm, progNFS, vers3, "NFSv3")
	if err != nil {
		return nil, err
	}
	s := &nfsSession{cl: cl}
	if s.mnt, err = dialRPC(ctx, cl.dial, net.JoinHostPort(cl.server, strconv.Itoa(int(mntPort))), 0, 0); err != nil {
		return nil, fmt.Errorf("mountd: %w", err)
	}
	if s.nfs, err = dialRPC(ctx, cl.dial, net.JoinHostPort(cl.server, strconv.Itoa(int(nfsPort))), 0, 0); err != nil {
		s.mnt.Close()
		return nil, fmt.Errorf("nfsd: %w", err)
	}
	return s, nil
}

// close unmounts what the session mounted (best effort) and disconnects.
func (s *nfsSession) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, m := range s.mounts {
		var e xdrEnc
		e.str(m)
		_, _ = s.mnt.call(ctx, progMount, vers3, 3, e.b) // UMNT
	}
	s.mnt.Close()
	s.nfs.Close()
}

func getport(ctx context.Context, pm *rpcConn, prog, vers uint32, what string) (uint32, error) {
	var e xdrEnc
	e.u32(prog)
	e.u32(vers)
	e.u32(protoTCP)
	e.u32(0)
	d, err := pm.call(ctx, progPortmap, vers2, 3, e.b) // PMAPPROC_GETPORT
	if err != nil {
		return 0, fmt.Errorf("portmapper: %w", err)
	}
	port := d.u32()
	if d.err != nil {
		return 0, fmt.Errorf("portmapper: %w", d.err)
	}
	if port == 0 || port > 65535 {
		return 0, fmt.Errorf("no %s service registered with the portmapper (program %d over TCP): is the NFS server running?", what, prog)
	}
	return port, nil
}

// mount returns the handle of dir, mounting its longest mountable prefix
// and looking the rest up.
func (s *nfsSession) mount(ctx context.Context, dir string) ([]byte, error) {
	dir = path.Clean("/" + dir)
	var rest []string
	var firstErr error
	for cur := dir; ; {
		fh, err := s.mnt1(ctx, cur)
		if err == nil {
			s.mounts = append(s.mounts, cur)
			for _, name := range rest {
				if fh, _, err = s.lookup(ctx, fh, name); err != nil {
					return nil, fmt.Errorf("lookup %s in %s: %w", name, cur, err)
				}
				cur = path.Join(cur, name)
			}
			return fh, nil
		}
		var st NFSStatus
		if firstErr == nil {
			firstErr = err
		}
		if !errors.As(err, &st) || cur == "/" || path.Dir(cur) == "/" {
			return nil, fmt.Errorf("mount %s: %w", dir, firstErr)
		}
		rest = append([]string{path.Base(cur)}, rest...)
		cur = path.Dir(cur)
	}
}

// mnt1 is one MOUNT v3 MNT call.
func (s *nfsSession) mnt1(ctx context.Context, dir string) ([]byte, error) {
	var e xdrEnc
	e.str(dir)
	d, err := s.mnt.call(ctx, progMount, vers3, 1, e.b)
	if err != nil {
		return nil, err
	}
	if st := d.u32(); st != 0 {
		if d.err != nil {
			return nil, d.err
		}
		return nil, NFSStatus(st)
	}
	fh := d.opaque(64)
	if d.err != nil {
		return nil, d.err
	}
	return fh, nil
}

// nfsCall calls an NFSv3 procedure and returns its status and results.
func (s *nfsSession) nfsCall(ctx context.Context, proc uint32, args []byte) (*xdrDec, error) {
	d, err := s.nfs.call(ctx, progNFS, vers3, proc, args)
	if err != nil {
		return nil, err
	}
	st := d.u32()
	if d.err != nil {
		return nil, d.err
	}
	if st != 0 {
		return nil, NFSStatus(st)
	}
	return d, nil
}

func dirop(dir []byte, name string) []byte {
	var e xdrEnc
	e.opaque(dir)
	e.str(name)
	return e.b
}

// postOpAttr reads a post_op_attr (RFC 1813 fattr3).
func postOpAttr(d *xdrDec) (NFSAttr, bool) {
	if d.u32() == 0 {
		return NFSAttr{}, false
	}
	typ, mode := d.u32(), d.u32()
	d.u32()               // nlink
	d.u32()               // uid
	d.u32()               // gid
	size := d.u64()       //
	d.take(8 + 8 + 8 + 8) // used, rdev, fsid, fileid
	d.take(24)            // atime, mtime, ctime
	return NFSAttr{Dir: typ == 2, Mode: mode & 0o7777, Size: int64(size)}, d.err == nil
}

func (s *nfsSession) lookup(ctx context.Context, dir []byte, name string) ([]byte, NFSAttr, error) {
	d, err := s.nfsCall(ctx, 3, dirop(dir, name)) // LOOKUP
	if err != nil {
		return nil, NFSAttr{}, err
	}
	fh := d.opaque(64)
	attr, _ := postOpAttr(d)
	if d.err != nil {
		return nil, NFSAttr{}, d.err
	}
	return fh, attr, nil
}

func (s *nfsSession) mkdir(ctx context.Context, dir []byte, name string) ([]byte, error) {
	var e xdrEnc
	e.b = dirop(dir, name)
	e.u32(1) // set mode
	e.u32(0o755)
	e.u32(0)                         // uid
	e.u32(0)                         // gid
	e.u32(0)                         // size
	e.u32(0)                         // atime: don't change
	e.u32(0)                         // mtime: don't change
	d, err := s.nfsCall(ctx, 9, e.b) // MKDIR
	if errors.Is(err, fs.ErrExist) {
		fh, _, err := s.lookup(ctx, dir, name)
		return fh, err
	}
	if err != nil {
		return nil, err
	}
	if d.u32() == 1 {
		if fh := d.opaque(64); d.err == nil {
			return fh, nil
		}
	}
	fh, _, err := s.lookup(ctx, dir, name)
	return fh, err
}

// splitPath cleans p and returns its directory and base name.
func splitPath(p string) (dir, name string, err error) {
	p = path.Clean("/" + p)
	if p == "/" {
		return "", "", fmt.Errorf("path %q names no file", p)
	}
	return path.Dir(p), path.Base(p), nil
}

// op runs f in a fresh session under the client's default deadline.
func (cl *NFSClient) op(ctx context.Context, what string, f func(s *nfsSession) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultNFSTimeout)
		defer cancel()
	}
	s, err := cl.session(ctx)
	if err != nil {
		return fmt.Errorf("nfs %s on %s: %w", what, cl.server, err)
	}
	defer s.close()
	if err := f(s); err != nil {
		return fmt.Errorf("nfs %s on %s: %w", what, cl.server, err)
	}
	return nil
}

// Stat looks p up; a missing file is an error matching fs.ErrNotExist.
func (cl *NFSClient) Stat(ctx context.Context, p string) (NFSAttr, error) {
	dir, name, err := splitPath(p)
	if err != nil {
		return NFSAttr{}, err
	}
	var attr NFSAttr
	err = cl.op(ctx, "stat "+p, func(s *nfsSession) error {
		fh, err := s.mount(ctx, dir)
		if err != nil {
			return err
		}
		_, attr, err = s.lookup(ctx, fh, name)
		return err
	})
	return attr, err
}

// MkdirAll makes dir and its missing parents below the export.
func (cl *NFSClient) MkdirAll(ctx context.Context, dir string) error {
	dir = path.Clean("/" + dir)
	return cl.op(ctx, "mkdir "+dir, func(s *nfsSession) error {
		var missing []string
		cur := dir
		var fh []byte
		for {
			var err error
			if fh, err = s.mnt1(ctx, cur); err == nil {
				s.mounts = append(s.mounts, cur)
				break
			}
			var st NFSStatus
			if !errors.As(err, &st) || path.Dir(cur) == "/" {
				return fmt.Errorf("mount %s: %w", cur, err)
			}
			missing = append([]string{path.Base(cur)}, missing...)
			cur = path.Dir(cur)
		}
		for _, name := range missing {
			next, _, err := s.lookup(ctx, fh, name)
			if errors.Is(err, fs.ErrNotExist) {
				next, err = s.mkdir(ctx, fh, name)
			}
			if err != nil {
				return fmt.Errorf("%s in %s: %w", name, cur, err)
			}
			fh, cur = next, path.Join(cur, name)
		}
		return nil
	})
}

// Remove removes a file or an empty directory; a missing one is an error
// matching fs.ErrNotExist.
func (cl *NFSClient) Remove(ctx context.Context, p string) error {
	dir, name, err := splitPath(p)
	if err != nil {
		return err
	}
	return cl.op(ctx, "remove "+p, func(s *nfsSession) error {
		fh, err := s.mount(ctx, dir)
		if err != nil {
			return err
		}
		_, attr, err := s.lookup(ctx, fh, name)
		if err != nil {
			return err
		}
		proc := uint32(12) // REMOVE
		if attr.Dir {
			proc = 13 // RMDIR
		}
		_, err = s.nfsCall(ctx, proc, dirop(fh, name))
		return err
	})
}

// dialReservedPort dials from a source port below 1024 when it can (root),
// else from any port.
func dialReservedPort(ctx context.Context, network, addr string) (net.Conn, error) {
	if os.Geteuid() == 0 {
		for range 8 {
			d := net.Dialer{LocalAddr: &net.TCPAddr{Port: 600 + rand.IntN(424)}}
			c, err := d.DialContext(ctx, network, addr)
			if err == nil {
				return c, nil
			}
			if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.EACCES) {
				return nil, err
			}
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// isNFSPath reports whether p is an nfs:// URL.
func isNFSPath(p string) bool { return strings.HasPrefix(p, "nfs://") }
