package membership

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// issue makes a CA and a host certificate signed by it.
func issue(t *testing.T, nodeID string, hosts []string, now time.Time) (ca *CA, keyPEM, certPEM string) {
	t.Helper()
	ca, caKey, err := NewCA("cluster-1")
	if err != nil {
		t.Fatal(err)
	}
	if caKey == "" || !strings.Contains(ca.CertPEM(), "BEGIN CERTIFICATE") {
		t.Fatalf("NewCA returned no key or certificate")
	}
	if _, err := LoadCA(ca.CertPEM(), caKey); err != nil {
		t.Fatalf("LoadCA of a new CA: %v", err)
	}
	ca.Now = func() time.Time { return now }
	keyPEM, csrPEM, err := NewKeyAndCSR(nodeID)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = ca.Sign(csrPEM, nodeID, hosts)
	if err != nil {
		t.Fatal(err)
	}
	return ca, keyPEM, certPEM
}

func TestSignHostCertificate(t *testing.T) {
	now := time.Date(2031, 5, 1, 12, 0, 0, 0, time.UTC)
	_, _, certPEM := issue(t, "node-1", []string{"10.0.0.5", "host1.example", "0.0.0.0", "host1.example", ""}, now)
	cert, err := ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "node-1" {
		t.Errorf("CN = %q; want the node id", cert.Subject.CommonName)
	}
	if !cert.NotBefore.Equal(now.Add(-CertBackdate)) {
		t.Errorf("NotBefore = %v; want the signer's clock minus %v", cert.NotBefore, CertBackdate)
	}
	if want := []string{NodeCertName, "localhost", "host1.example"}; !slices.Equal(cert.DNSNames, want) {
		t.Errorf("DNS names = %v; want %v (deduplicated)", cert.DNSNames, want)
	}
	var ips []string
	for _, ip := range cert.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1", "10.0.0.5"}; !slices.Equal(ips, want) {
		t.Errorf("IPs = %v; want %v (no unspecified address)", ips, want)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("ext key usage = %v; want server and client auth", cert.ExtKeyUsage)
	}
}

func TestSignRejectsBadCSR(t *testing.T) {
	ca, _, _ := issue(t, "n", nil, time.Now())
	_, csrPEM, _ := NewKeyAndCSR("n")
	for name, csr := range map[string]string{
		"not PEM":  "hello",
		"tampered": strings.Replace(csrPEM, csrPEM[40:48], "AAAAAAAA", 1),
	} {
		if _, err := ca.Sign(csr, "n", nil); err == nil {
			t.Errorf("Sign(%s) succeeded; want an error", name)
		}
	}
}

// handshake runs one TLS handshake between server and client configs and
// returns the client's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		err := s.Handshake()
		if err == nil {
			_, _ = io.WriteString(s, "x")
		}
		a.Close()
		done <- err
	}()
	c := tls.Client(b, client)
	err := c.Handshake()
	if err == nil {
		buf := make([]byte, 1)
		_, err = io.ReadFull(c, buf)
	}
	b.Close()
	<-done
	return err
}

func TestMutualTLSAndPinning(t *testing.T) {
	ca, keyPEM, certPEM := issue(t, "node-1", []string{"127.0.0.1"}, time.Now())
	server, client, err := TLSConfigs(ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, MTLSServer(server), client); err != nil {
		t.Fatalf("mTLS between two certificates of one CA: %v", err)
	}
	// A client without a certificate cannot reach the Raft server config.
	noCert := client.Clone()
	noCert.Certificates, noCert.GetClientCertificate = nil, nil
	if err := handshake(t, MTLSServer(server), noCert); err == nil {
		t.Fatal("Raft server accepted a client without a certificate")
	}

	caCert, _ := ParseCert(ca.CertPEM())
	if err := handshake(t, server, PinnedClient(Fingerprint(caCert))); err != nil {
		t.Fatalf("pinned client with the right CA fingerprint: %v", err)
	}
	other, _, _ := NewCA("cluster-2")
	otherCert, _ := ParseCert(other.CertPEM())
	if err := handshake(t, server, PinnedClient(Fingerprint(otherCert))); err == nil ||
		!strings.Contains(err.Error(), "does not match the fingerprint") {
		t.Fatalf("pinned client with another CA's fingerprint = %v; want a fingerprint mismatch", err)
	}
}

func TestJoinTokenText(t *testing.T) {
	tok := JoinToken{ClusterID: "c1", CAFingerprint: strings.Repeat("ab", 32), Addrs: []string{"10.0.0.1:8470"}, ID: "t1", Secret: "s"}
	got, err := ParseJoinToken("  " + tok.String() + "\n")
	if err != nil || got.ID != "t1" || got.Secret != "s" || got.Addrs[0] != "10.0.0.1:8470" {
		t.Fatalf("ParseJoinToken(String()) = %+v, %v", got, err)
	}
	missing := tok
	missing.Secret = ""
	for name, s := range map[string]string{
		"no prefix":      "hello",
		"bad base64":     joinTokenPrefix + "!!!",
		"not JSON":       joinTokenPrefix + "aGVsbG8",
		"missing secret": missing.String(),
	} {
		if _, err := ParseJoinToken(s); err == nil || !strings.Contains(err.Error(), "malformed join token") {
			t.Errorf("ParseJoinToken(%s) = %v; want a malformed token error", name, err)
		}
	}
	if HashSecret("s") == HashSecret("t") || len(HashSecret("s")) != 64 {
		t.Errorf("HashSecret is not a hex sha256")
	}
}
