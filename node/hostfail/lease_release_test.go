package hostfail

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/consensus"
)

type fakeRaft struct {
	leader string
	commit uint64
}

func (f fakeRaft) Leader() (string, string) { return f.leader, "" }
func (f fakeRaft) IsLeader() bool           { return false }
func (f fakeRaft) ConfirmLeader(context.Context) error {
	return errors.New("not the leader")
}
func (f fakeRaft) StepAside()               {}
func (f fakeRaft) Status() consensus.Status { return consensus.Status{CommitIndex: f.commit} }

func leaseAgainst(t *testing.T, h http.HandlerFunc) (uint64, error) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	l := &Lease{SelfID: "F", SelfName: "f", Raft: fakeRaft{leader: "L", commit: 17},
		AddrOf: func(string) string { return strings.TrimPrefix(srv.URL, "https://") }, Client: srv.Client()}
	return l.Renew(context.Background(), FenceReport{Timeout: 0})
}

func TestRenewWithTheLeader(t *testing.T) {
	commit, err := leaseAgainst(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/internal/v1/lease" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(leaseAnswer{Leader: "L", Commit: 99})
	})
	if err != nil || commit != 99 {
		t.Fatalf("renew = %d, %v; want the leader's commit index 99", commit, err)
	}
}

// A leader of the previous release has no lease route (404): it answered,
// and it never restarts servers elsewhere, so the renewal counts, with
// the commit index it sent this host.
func TestRenewWithALeaderOfThePreviousRelease(t *testing.T) {
	commit, err := leaseAgainst(t, http.NotFound)
	if err != nil || commit != 17 {
		t.Fatalf("renew = %d, %v; want the local commit index 17 and no error", commit, err)
	}
}

func TestRenewFailsOnOtherAnswers(t *testing.T) {
	for _, code := range []int{http.StatusConflict, http.StatusInternalServerError, http.StatusForbidden} {
		if _, err := leaseAgainst(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }); err == nil {
			t.Errorf("renew with status %d succeeded; want an error", code)
		}
	}
	if _, err := leaseAgainst(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(leaseAnswer{Leader: "X", Commit: 5})
	}); err == nil {
		t.Error("renew answered for another leader succeeded; want an error")
	}
}
