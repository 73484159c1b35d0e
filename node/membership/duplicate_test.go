package membership_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A joiner naming an existing member's id (a copied data dir, or a forged
// request) is refused before its token is used, and nothing changes.
func TestAdmitJoinRefusesExistingNodeID(t *testing.T) {
	a := newAdmission(t)
	ctx := context.Background()
	tok := a.token(time.Hour)
	req := a.request(tok, "clone", a.now)
	req.NodeID = "m1" // the bootstrap member's id
	_, err := a.adm.Join(ctx, req)
	if status(err) != http.StatusConflict || !strings.Contains(err.Error(), "host id m1 is already a member") {
		t.Fatalf("join with a member's id = %v; want 409 naming the id", err)
	}
	if m, _ := a.st.Snapshot().Member("m1"); m.Name != "first" || m.APIAddr != "10.0.0.1:8470" {
		t.Fatalf("member m1 after the refused join = %+v; want it unchanged", m)
	}
	if jt, _ := a.st.Snapshot().JoinToken(tok.ID); !jt.UsedAt.IsZero() {
		t.Fatal("the refused join used the token")
	}
	if _, err := a.adm.Join(ctx, a.request(tok, "h2", a.now)); err != nil {
		t.Fatalf("the same token with a new id: %v", err)
	}
}
