package nodetest

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// retarget rewrites a join token's member addresses (tests only).
func retarget(t *testing.T, tok, addr string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok, "PSJ1-"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["a"] = []string{addr}
	b, _ := json.Marshal(m)
	return "PSJ1-" + base64.RawURLEncoding.EncodeToString(b)
}
