package membership

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

const joinTokenPrefix = "PSJ1-"

// JoinToken is what `peerstack token create` prints, base64url-encoded:
// where to join, which CA to trust, and a single-use secret.
type JoinToken struct {
	ClusterID     string   `json:"c"`
	CAFingerprint string   `json:"f"`
	Addrs         []string `json:"a"`
	ID            string   `json:"i"`
	Secret        string   `json:"s"`
}

func (t JoinToken) String() string {
	b, _ := json.Marshal(t)
	return joinTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseJoinToken reads a token as String prints it.
func ParseJoinToken(s string) (JoinToken, error) {
	var t JoinToken
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, joinTokenPrefix) {
		return t, errors.New("malformed join token: it should start with " + joinTokenPrefix + " (copy the last line printed by `peerstack token create`)")
	}
	const hint = " (copy the last line printed by `peerstack token create`)"
	raw, err := base64.RawURLEncoding.DecodeString(s[len(joinTokenPrefix):])
	if err != nil {
		return t, fmt.Errorf("malformed join token: %w"+hint, err)
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return t, fmt.Errorf("malformed join token: %w"+hint, err)
	}
	if t.ClusterID == "" || len(t.CAFingerprint) != 64 || len(t.Addrs) == 0 || t.ID == "" || t.Secret == "" {
		return t, errors.New("malformed join token: a field is missing")
	}
	return t, nil
}

// HashSecret is what the state keeps of a token's secret.
func HashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
