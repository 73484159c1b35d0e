package membership

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync/atomic"
	"time"
)

// NodeCertName is a DNS name every node certificate carries; hosts dial
// each other with it as the TLS server name.
const NodeCertName = "peerstack-node"

// CertBackdate is how long before its signer's clock a certificate
// becomes valid, so that hosts whose clocks lag the signer's accept it.
// The clock skew limit must stay well below it.
const CertBackdate = time.Hour

// DefaultCertTTL is how long a host certificate is valid: a day. Hosts
// renew theirs when two thirds of it have passed (CertRenewer), so a
// certificate that leaks or outlives its host's membership is soon
// worthless.
const DefaultCertTTL = 24 * time.Hour

// CA is the cluster certificate authority: it signs host certificates.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM string
	// Now is the signer's clock; nil means time.Now.
	Now func() time.Time
	// TTL is how long the certificates it signs are valid from now;
	// 0 means DefaultCertTTL.
	TTL time.Duration
}

// CertPEM is the CA certificate.
func (c *CA) CertPEM() string { return c.certPEM }

func (c *CA) ttl() time.Duration {
	if c.TTL > 0 {
		return c.TTL
	}
	return DefaultCertTTL
}

func (c *CA) clock() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// NewCA creates a cluster CA and returns it with its key (PEM).
func NewCA(clusterID string) (*CA, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "peerstack cluster CA " + clusterID, Organization: []string{"peerstack"}},
		NotBefore:             time.Now().Add(-CertBackdate),
		NotAfter:              time.Now().AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", fmt.Errorf("create CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, "", err
	}
	return &CA{cert: cert, key: key, certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}, keyPEM, nil
}

// LoadCA loads the cluster CA from its certificate and key (PEM).
func LoadCA(certPEM, keyPEM string) (*CA, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	kb, _ := pem.Decode([]byte(keyPEM))
	if kb == nil {
		return nil, errors.New("load CA: no key PEM block")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	return &CA{cert: cert, key: key, certPEM: certPEM}, nil
}

func encodeKey(key *ecdsa.PrivateKey) (string, error) {
	b, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("encode key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b})), nil
}

// ParseCert parses one PEM certificate.
func ParseCert(certPEM string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil {
		return nil, errors.New("no certificate PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// NewKeyAndCSR makes a node key and a certificate request.
func NewKeyAndCSR(nodeID string) (keyPEM, csrPEM string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate node key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: nodeID}}, key)
	if err != nil {
		return "", "", fmt.Errorf("create CSR: %w", err)
	}
	keyPEM, err = encodeKey(key)
	return keyPEM, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), err
}

// CSRKeyHash is the hex sha256 of the public key in a PEM certificate
// request, or "" if it does not parse.
func CSRKeyHash(csrPEM string) string {
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil {
		return ""
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// Sign issues a node certificate (server and client auth) for the CSR's
// key with the given SANs.
func (c *CA) Sign(csrPEM, nodeID string, hosts []string) (string, error) {
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil {
		return "", errors.New("sign: no CSR PEM block")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return "", fmt.Errorf("sign: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return "", fmt.Errorf("sign: CSR signature: %w", err)
	}
	now := c.clock()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: nodeID, Organization: []string{"peerstack"}},
		NotBefore:    now.Add(-CertBackdate),
		NotAfter:     now.Add(c.ttl()),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{NodeCertName, "localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return "", fmt.Errorf("sign node certificate: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// Fingerprint is the hex sha256 of a certificate's DER bytes.
func Fingerprint(cert *x509.Certificate) string {
	s := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(s[:])
}

// TLSConfigs builds the server and client TLS configs of a node.
func TLSConfigs(caPEM, certPEM, keyPEM string) (server, client *tls.Config, err error) {
	kp := &Keypair{}
	if err := kp.Set(caPEM, certPEM, keyPEM); err != nil {
		return nil, nil, err
	}
	server, client, err = TLSConfigsFor(caPEM, kp)
	return server, client, err
}

// TLSConfigsFor builds the server and client TLS configs of a node that
// present whatever certificate kp holds at each handshake, so a renewed
// certificate is used from the next connection on.
func TLSConfigsFor(caPEM string, kp *Keypair) (server, client *tls.Config, err error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, nil, errors.New("load cluster CA: no certificate")
	}
	server = &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.current(), nil },
		ClientCAs:      pool,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		MinVersion:     tls.VersionTLS12,
	}
	client = &tls.Config{
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.current(), nil },
		RootCAs:              pool,
		ServerName:           NodeCertName,
		MinVersion:           tls.VersionTLS12,
	}
	return server, client, nil
}

// Keypair is a host's current certificate and key, replaced whole when
// the host renews its certificate.
type Keypair struct {
	p atomic.Pointer[tls.Certificate]
}

// Set loads a certificate and key (PEM) as the current pair; the CA is
// sent with the chain so a joining host can pin its fingerprint.
func (k *Keypair) Set(caPEM, certPEM, keyPEM string) error {
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return fmt.Errorf("load node certificate: %w", err)
	}
	if cb, _ := pem.Decode([]byte(caPEM)); cb != nil {
		pair.Certificate = append(pair.Certificate, cb.Bytes)
	}
	k.p.Store(&pair)
	return nil
}

// Leaf is the current certificate, parsed; nil before Set.
func (k *Keypair) Leaf() *x509.Certificate {
	if c := k.p.Load(); c != nil {
		return c.Leaf
	}
	return nil
}

func (k *Keypair) current() *tls.Certificate { return k.p.Load() }

// MTLSServer is the server config for Raft: client certificates required.
func MTLSServer(s *tls.Config) *tls.Config {
	c := s.Clone()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c
}

// PinnedClient returns a client TLS config that trusts a server only if
// its chain ends in a CA with the given fingerprint (used before joining,
// when the CA itself is not yet known).
func PinnedClient(caFingerprint string) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // verified below against the pinned CA fingerprint
		MinVersion:         tls.VersionTLS12,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var certs []*x509.Certificate
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return fmt.Errorf("parse peer certificate: %w", err)
				}
				certs = append(certs, c)
			}
			if len(certs) == 0 {
				return errors.New("peer sent no certificate")
			}
			// The CA must be in the chain the server sent.
			for _, c := range certs[1:] {
				if Fingerprint(c) == caFingerprint {
					pool := x509.NewCertPool()
					pool.AddCert(c)
					_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
					if err != nil {
						return fmt.Errorf("peer certificate not signed by the pinned CA: %w", err)
					}
					return nil
				}
			}
			return errors.New("the server's CA does not match the fingerprint in the join token (wrong cluster or a man in the middle)")
		},
	}
}
