package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// Sentinel errors of ProbeNFS.
var (
	// ErrNFSUnreachable: no NFS service answered at the server (its
	// portmapper, mountd or nfsd).
	ErrNFSUnreachable = errors.New("cannot reach NFS server")
	// ErrNFSNotWritable: the server answered, but the directory cannot be
	// mounted or made, or a file cannot be created in it.
	ErrNFSNotWritable = errors.New("NFS export is not writable")
)

// ProbeNFS proves that the share at rawURL ("nfs://server/export[/path]")
// can hold volumes and images: the server answers, the directory exists or
// is made, and a probe file is created in it and removed again. dial nil
// means the default (see NewNFSClient). Errors wrap ErrBadNFSURL,
// ErrNFSUnreachable or ErrNFSNotWritable and say what failed.
func ProbeNFS(ctx context.Context, rawURL string, dial DialFunc) error {
	u, err := ParseNFSURL(rawURL)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultNFSTimeout)
		defer cancel()
	}
	cl := NewNFSClient(u.Server, dial)
	s, err := cl.session(ctx)
	if err != nil {
		return fmt.Errorf("%w %s: %v", ErrNFSUnreachable, u.Server, err)
	}
	s.close()
	if err := cl.MkdirAll(ctx, u.Dir()); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNFSNotWritable, u, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := ".peerstack-probe-" + hex.EncodeToString(rnd[:])
	err = cl.op(ctx, "probe "+u.Dir(), func(s *nfsSession) error {
		fh, err := s.mount(ctx, u.Dir())
		if err != nil {
			return err
		}
		if err := s.create(ctx, fh, name); err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		if _, err := s.nfsCall(ctx, 12, dirop(fh, name)); err != nil { // REMOVE
			return fmt.Errorf("remove %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNFSNotWritable, u, err)
	}
	return nil
}

// create makes an empty file name in dir (CREATE, GUARDED: an existing
// name is NFS3ERR_EXIST).
func (s *nfsSession) create(ctx context.Context, dir []byte, name string) error {
	var e xdrEnc
	e.b = dirop(dir, name)
	e.u32(1) // createhow3: GUARDED
	e.u32(1) // sattr3: set mode
	e.u32(0o600)
	e.u32(0)                         // uid
	e.u32(0)                         // gid
	e.u32(0)                         // size
	e.u32(0)                         // atime: don't change
	e.u32(0)                         // mtime: don't change
	_, err := s.nfsCall(ctx, 8, e.b) // CREATE
	return err
}
