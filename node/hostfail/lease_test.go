package hostfail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus"
	"github.com/peerstack/peerstack/rest"
)

type leaderRaft struct{ commit uint64 }

func (r *leaderRaft) Leader() (string, string)            { return "L", "" }
func (r *leaderRaft) IsLeader() bool                      { return true }
func (r *leaderRaft) ConfirmLeader(context.Context) error { return nil }
func (r *leaderRaft) StepAside()                          {}
func (r *leaderRaft) Status() consensus.Status            { return consensus.Status{CommitIndex: r.commit} }

// renewal is host H's lease renewal reporting timeout, as the leader's
// handler receives it.
func renewal(timeout time.Duration) *rest.Ctx {
	body := `{"fence_timeout_ns":` + strconv.FormatInt(int64(timeout), 10) + `,"sent_mono_ns":1}`
	req := httptest.NewRequest("POST", "/internal/v1/lease", strings.NewReader(body))
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: "H"}}}}
	return &rest.Ctx{R: req, W: httptest.NewRecorder()}
}

// A renewal is acknowledged only once the reported fence timeout is
// covered in the replicated state: a later leader knows nothing of this
// report, so the state must make it wait at least that long. Refused
// cover, refused renewal (the host keeps its old timeout).
func TestLeaseAcknowledgesOnlyCoveredTimeouts(t *testing.T) {
	var order []string
	var coverErr error
	l := &Lease{SelfID: "L", SelfName: "leader", Raft: &leaderRaft{commit: 7},
		Heard: func(host string, d, _ time.Duration) { order = append(order, "heard "+host+" "+d.String()) },
		Cover: func(_ context.Context, d time.Duration) error {
			order = append(order, "cover "+d.String())
			return coverErr
		}}
	if _, err := l.serve(renewal(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ", "); got != "cover 30s, heard H 30s" {
		t.Fatalf("order = %s; want the cover before the renewal is recorded", got)
	}
	order, coverErr = nil, errors.New("no quorum")
	_, err := l.serve(renewal(30 * time.Second))
	var he *rest.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable {
		t.Fatalf("renewal with its cover refused = %v; want 503", err)
	}
	if got := strings.Join(order, ", "); got != "cover 30s" {
		t.Fatalf("order = %s; want no renewal recorded", got)
	}
	// The leader's own renewal is covered the same way.
	order = nil
	if _, err := l.Renew(context.Background(), FenceReport{Timeout: 30 * time.Second, Sent: 1}); err == nil {
		t.Fatal("the leader's own renewal acknowledged with its cover refused")
	}
	coverErr = nil
	if commit, err := l.Renew(context.Background(), FenceReport{Timeout: 30 * time.Second, Sent: 2}); err != nil || commit != 7 {
		t.Fatalf("own renewal = %d, %v", commit, err)
	}
}
