package compute

// Console grants: the internal console routes (the log, and the
// interactive attach the dashboard serves) are answered only for a host
// that shows a grant for that instance. A host mints one only where the
// public API has just authorized a caller for the instance's console (the
// console-output action; the console WebSocket opened with the token the
// remote-console API handed out), naming the instance and itself, valid
// for a minute. It is a MAC under a key derived from the cluster's active
// token-signing key, which every member can check and no certificate
// alone provides.
//
// What it guards against, and what not: a member's certificate alone (a
// leaked key pair, a host's TLS files without its Raft state) no longer
// opens any console, and a grant one host obtained cannot be replayed by
// another. A member whose whole state is compromised holds the signing
// keys and can mint grants, as it can mint tokens; removing it (which
// revokes its certificate) is the answer to that.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// ConsoleGrantHeader carries a console grant on the internal console
// routes.
const ConsoleGrantHeader = "X-Peerstack-Console-Grant"

// ConsoleGrantTTL is how long a grant is good for; a host mints a fresh
// one for every internal console request.
const ConsoleGrantTTL = time.Minute

// consoleGrantSkew is how far ahead of this host's clock a grant's expiry
// may be (the minting host's clock runs ahead).
const consoleGrantSkew = time.Minute

// ErrConsoleGrant is the reason a grant is refused.
var ErrConsoleGrant = errors.New("no valid console grant for this instance and host")

func grantMAC(secret []byte, msg string) []byte {
	k := hmac.New(sha256.New, secret)
	k.Write([]byte("peerstack console grant"))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// MintConsoleGrant returns a grant for host hostID to reach instanceID's
// console, valid until now+ConsoleGrantTTL.
func MintConsoleGrant(sn *statedb.Snapshot, instanceID, hostID string, now time.Time) (string, error) {
	var active *statedb.SigningKey
	for _, k := range sn.SigningKeys() {
		if k.RetireAt.IsZero() && (active == nil || k.CreatedAt.After(active.CreatedAt)) {
			active = k
		}
	}
	if active == nil {
		return "", errors.New("console grant: no active signing key")
	}
	msg := strings.Join([]string{active.ID, instanceID, hostID, strconv.FormatInt(now.Add(ConsoleGrantTTL).Unix(), 10)}, "\n")
	return base64.RawURLEncoding.EncodeToString([]byte(msg)) + "." + hex.EncodeToString(grantMAC(active.Secret, msg)), nil
}

// VerifyConsoleGrant checks that grant lets host hostID reach
// instanceID's console now.
func VerifyConsoleGrant(sn *statedb.Snapshot, grant, instanceID, hostID string, now time.Time) error {
	enc, mac, ok := strings.Cut(grant, ".")
	if !ok {
		return ErrConsoleGrant
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return ErrConsoleGrant
	}
	parts := strings.Split(string(raw), "\n")
	if len(parts) != 4 || parts[1] != instanceID || parts[2] != hostID {
		return ErrConsoleGrant
	}
	key, ok := sn.SigningKey(parts[0])
	if !ok || (!key.RetireAt.IsZero() && !now.Before(key.RetireAt)) {
		return ErrConsoleGrant
	}
	got, err := hex.DecodeString(mac)
	if err != nil || !hmac.Equal(got, grantMAC(key.Secret, string(raw))) {
		return ErrConsoleGrant
	}
	exp, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil || now.Unix() > exp || time.Unix(exp, 0).After(now.Add(ConsoleGrantTTL+consoleGrantSkew)) {
		return ErrConsoleGrant
	}
	return nil
}

type grantKey struct{}

// WithConsoleGrant returns ctx carrying a console grant, for the Backend
// to send with an internal console request.
func WithConsoleGrant(ctx context.Context, grant string) context.Context {
	return context.WithValue(ctx, grantKey{}, grant)
}

// ConsoleGrantFrom is the grant ctx carries, or "".
func ConsoleGrantFrom(ctx context.Context) string {
	g, _ := ctx.Value(grantKey{}).(string)
	return g
}

// CheckConsoleCaller admits a request on an internal console route for
// instanceID: a client certificate naming a current member, and that
// member's grant for the instance.
func CheckConsoleCaller(sn *statedb.Snapshot, r *http.Request, instanceID string, now time.Time) error {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		return errors.New("a cluster client certificate is required")
	}
	host := r.TLS.PeerCertificates[0].Subject.CommonName
	if _, ok := sn.Member(host); !ok {
		return fmt.Errorf("host %s is not a member of the cluster", host)
	}
	if err := VerifyConsoleGrant(sn, r.Header.Get(ConsoleGrantHeader), instanceID, host, now); err != nil {
		return fmt.Errorf("host %s: %w", host, err)
	}
	return nil
}
