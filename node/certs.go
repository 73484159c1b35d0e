package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/peerstack/peerstack/node/membership"
)

// certLoop renews this host's certificate when two thirds of its validity
// have passed (and at once if it has expired, after a long stop): a new
// key, signed for this member id, written to the data dir and presented
// from the next handshake on. A revoked host does not renew.
func (n *Node) certLoop(ctx context.Context) {
	for {
		wait := time.Minute
		if leaf := n.certs.Leaf(); leaf != nil {
			if d := time.Until(renewAt(leaf.NotBefore.Add(membership.CertBackdate), leaf.NotAfter)); d < wait {
				wait = d
			}
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			if leaf := n.certs.Leaf(); leaf != nil && time.Now().Before(renewAt(leaf.NotBefore.Add(membership.CertBackdate), leaf.NotAfter)) {
				continue
			}
		}
		if err := n.renewCert(); err != nil {
			n.log.Warn("renew host certificate; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// renewAt is two thirds into a certificate's validity (issued is when
// its signer signed it).
func renewAt(issued, notAfter time.Time) time.Time {
	return issued.Add(notAfter.Sub(issued) * 2 / 3)
}

// errRevoked: this host was removed; it gets no new certificate.
var errRevoked = errors.New("this host's certificates are revoked")

// renewCert signs a new certificate for this host with the cluster CA.
func (n *Node) renewCert() error {
	sn := n.State()
	if _, revoked := sn.RevokedHost(n.id.NodeID); revoked {
		return errRevoked
	}
	cfg, ok := sn.Cluster()
	if !ok {
		return errors.New("no cluster configuration in the state yet")
	}
	caKey, _, err := n.clusterSecrets()
	if err != nil {
		return err
	}
	ca, err := membership.LoadCA(cfg.CACertPEM, caKey)
	if err != nil {
		return err
	}
	ca.Now, ca.TTL = n.clock, n.cfg.CertTTL
	keyPEM, csrPEM, err := membership.NewKeyAndCSR(n.id.NodeID)
	if err != nil {
		return err
	}
	certPEM, err := ca.Sign(csrPEM, n.id.NodeID, n.certHosts())
	if err != nil {
		return err
	}
	// The key first: a crash between the two leaves the old certificate
	// with a key that does not match, which the next start refuses loudly
	// rather than using a stale pair.
	if err := writeFileAtomic(filepath.Join(n.tlsDir(), "node.key"), []byte(keyPEM), 0o600); err != nil {
		return fmt.Errorf("write renewed key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(n.tlsDir(), "node.crt"), []byte(certPEM), 0o600); err != nil {
		return fmt.Errorf("write renewed certificate: %w", err)
	}
	if err := n.certs.Set(cfg.CACertPEM, certPEM, keyPEM); err != nil {
		return err
	}
	n.log.Info("renewed host certificate", "expires", n.certs.Leaf().NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// caKeyPath is where a member keeps the cluster CA's private key.
func (n *Node) caKeyPath() string { return filepath.Join(n.tlsDir(), "ca.key") }

// writeCAKey stores the cluster CA's key on this host (root only). An
// empty key (a cluster made before the key left the state) writes
// nothing.
func (n *Node) writeCAKey(keyPEM string) error {
	if keyPEM == "" {
		return nil
	}
	if err := writeFileAtomic(n.caKeyPath(), []byte(keyPEM), 0o600); err != nil {
		return fmt.Errorf("write CA key: %w", err)
	}
	return nil
}

// clusterSecrets returns the cluster CA's key and the gossip key from
// this host's disk, falling back to the replicated state's copies for a
// cluster bootstrapped before they left it.
func (n *Node) clusterSecrets() (caKeyPEM string, gossipKey []byte, err error) {
	cfg, _ := n.State().Cluster()
	if b, err := os.ReadFile(n.caKeyPath()); err == nil {
		caKeyPEM = string(b)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", nil, fmt.Errorf("read CA key: %w", err)
	} else if cfg != nil {
		caKeyPEM = cfg.CAKeyPEM
	}
	if caKeyPEM == "" {
		return "", nil, errors.New("this host holds no cluster CA key")
	}
	if b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, "gossip.key")); err == nil {
		if k, err := hex.DecodeString(strings.TrimSpace(string(b))); err == nil {
			gossipKey = k
		}
	}
	if len(gossipKey) == 0 && cfg != nil {
		gossipKey = cfg.GossipKey
	}
	return caKeyPEM, gossipKey, nil
}
