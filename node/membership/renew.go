package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// Files is where a host keeps its cluster secrets: the TLS directory
// (ca.crt, node.crt, node.key, and ca.key on clusters that keep the CA
// key off the log) and the gossip key in the data dir.
type Files struct{ DataDir string }

// TLSDir is the directory of the host's certificates and keys.
func (f Files) TLSDir() string { return filepath.Join(f.DataDir, "tls") }

// caKeyPath is where this host keeps the cluster CA's key.
func (f Files) caKeyPath() string { return filepath.Join(f.TLSDir(), "ca.key") }

// WriteCAKey keeps the cluster CA's key on this host's disk (0600); an
// empty key (an older cluster keeping it in the state) writes nothing.
func (f Files) WriteCAKey(keyPEM string) error {
	if keyPEM == "" {
		return nil
	}
	if err := WriteFileAtomic(f.caKeyPath(), []byte(keyPEM), 0o600); err != nil {
		return fmt.Errorf("write CA key: %w", err)
	}
	return nil
}

// Secrets returns the cluster CA's key and the gossip key as this host
// holds them: from its disk, else (older clusters) from the replicated
// cluster configuration cfg (nil when there is none yet).
func (f Files) Secrets(cfg *statedb.ClusterConfig) (caKeyPEM string, gossipKey []byte, err error) {
	if b, err := os.ReadFile(f.caKeyPath()); err == nil {
		caKeyPEM = string(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", nil, fmt.Errorf("read CA key: %w", err)
	} else if cfg != nil {
		caKeyPEM = cfg.CAKeyPEM
	}
	if caKeyPEM == "" {
		return "", nil, errors.New("this host holds no cluster CA key")
	}
	if k, err := f.ReadGossipKeys(); err == nil {
		gossipKey = k.Keys[0]
	}
	if len(gossipKey) == 0 && cfg != nil {
		gossipKey = cfg.GossipKey
	}
	return caKeyPEM, gossipKey, nil
}

// WriteFileAtomic writes a file through a temporary file and a rename,
// so a crash leaves the old or the new content, never half of it: the
// temporary file is synced before the rename and the directory after it,
// so when it returns the new content is on disk under path. The
// temporary file has a name of its own (two writers, or one left by a
// crash, never share it) and is removed whenever the write fails; the
// file gets mode exactly.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir flushes a directory's entries (a rename in it) to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ErrRevoked is why a host does not renew its certificate.
var ErrRevoked = errors.New("this host's certificates are revoked")

// CertRenewer keeps this host's certificate fresh without a restart: it
// signs a new key with the cluster CA at two thirds of the certificate's
// life, writes both to the TLS directory and swaps them into the
// Keypair every TLS set-up of this host reads.
type CertRenewer struct {
	HostID string
	State  func() *statedb.Snapshot
	Files  Files
	Clock  func() time.Time
	TTL    time.Duration
	// Hosts are the names and addresses the certificate covers.
	Hosts   func() []string
	Keypair *Keypair
	Logger  *slog.Logger
}

// Run renews the certificate when due until ctx ends; a failed renewal
// is retried every 10 s.
func (r *CertRenewer) Run(ctx context.Context) {
	for {
		wait := time.Minute
		if leaf := r.Keypair.Leaf(); leaf != nil {
			if d := time.Until(renewAt(leaf.NotBefore.Add(CertBackdate), leaf.NotAfter)); d < wait {
				wait = d
			}
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			if leaf := r.Keypair.Leaf(); leaf != nil && time.Now().Before(renewAt(leaf.NotBefore.Add(CertBackdate), leaf.NotAfter)) {
				continue
			}
		}
		if err := r.Renew(); err != nil {
			r.Logger.Warn("renew host certificate; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// renewAt is when a certificate issued at issued is renewed: at two
// thirds of its life.
func renewAt(issued, notAfter time.Time) time.Time {
	return issued.Add(notAfter.Sub(issued) * 2 / 3)
}

// Renew signs a new key for this host with the cluster CA (the host holds
// its key) and takes it into use.
func (r *CertRenewer) Renew() error {
	sn := r.State()
	if _, revoked := sn.RevokedHost(r.HostID); revoked {
		return ErrRevoked
	}
	cfg, ok := sn.Cluster()
	if !ok {
		return errors.New("no cluster configuration in the state yet")
	}
	caKey, _, err := r.Files.Secrets(cfg)
	if err != nil {
		return err
	}
	ca, err := LoadCA(cfg.CACertPEM, caKey)
	if err != nil {
		return err
	}
	ca.Now, ca.TTL = r.Clock, r.TTL
	keyPEM, csrPEM, err := NewKeyAndCSR(r.HostID)
	if err != nil {
		return err
	}
	certPEM, err := ca.Sign(csrPEM, r.HostID, r.Hosts())
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(filepath.Join(r.Files.TLSDir(), "node.key"), []byte(keyPEM), 0o600); err != nil {
		return fmt.Errorf("write renewed key: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(r.Files.TLSDir(), "node.crt"), []byte(certPEM), 0o600); err != nil {
		return fmt.Errorf("write renewed certificate: %w", err)
	}
	if err := r.Keypair.Set(cfg.CACertPEM, certPEM, keyPEM); err != nil {
		return err
	}
	r.Logger.Info("renewed host certificate", "expires", r.Keypair.Leaf().NotAfter.UTC().Format(time.RFC3339))
	return nil
}
