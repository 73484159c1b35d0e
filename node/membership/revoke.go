package membership

import (
	"crypto/tls"
	"fmt"
)

// RefuseRevoked returns a copy of cfg that, after the usual chain checks,
// refuses a peer whose certificate names a revoked member (revoked is
// asked with the certificate's common name, the member id). A peer
// without a certificate (an API client using a token) passes: cfg decides
// whether one is required. The check runs at every handshake, so a host
// removed from the cluster is refused at its next connection.
func RefuseRevoked(cfg *tls.Config, revoked func(memberID string) bool) *tls.Config {
	c := cfg.Clone()
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		if id := cs.PeerCertificates[0].Subject.CommonName; revoked(id) {
			return fmt.Errorf("the certificate of member %s is revoked: the member was removed from the cluster", id)
		}
		return nil
	}
	return c
}
