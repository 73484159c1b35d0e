package membership

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/gossip"
)

func TestJoinClockOK(t *testing.T) {
	const limit = 30 * time.Second
	tests := []struct {
		measured time.Duration
		want     bool
	}{
		{0, true},
		{limit, true},
		{limit + time.Millisecond, false},
		{time.Hour, false},
		{-limit, true},
		// A joiner behind us looks further behind by the transit.
		{-limit - JoinTransit, true},
		{-limit - JoinTransit - time.Millisecond, false},
		{-time.Hour, false},
	}
	for _, tt := range tests {
		if got := JoinClockOK(tt.measured, limit); got != tt.want {
			t.Errorf("JoinClockOK(%v, %v) = %v; want %v", tt.measured, limit, got, tt.want)
		}
	}
}

func TestDescribeSkew(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{3600*time.Second + 200*time.Millisecond, "3600.2 s ahead of"},
		{-12 * time.Second, "12.0 s behind"},
		{0, "0.0 s ahead of"},
	}
	for _, tt := range tests {
		if got := DescribeSkew(tt.d); got != tt.want {
			t.Errorf("DescribeSkew(%v) = %q; want %q", tt.d, got, tt.want)
		}
	}
}

// logRecorder keeps "LEVEL message" lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// take returns the lines logged since the last call.
func (r *logRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.lines
	r.lines = nil
	return out
}

func TestClockWatch(t *testing.T) {
	at := time.Unix(1, 0)
	member := func(id string, skew time.Duration) gossip.Member {
		return gossip.Member{Name: id, Meta: gossip.Meta{Name: "h-" + id}, State: gossip.StateAlive, ClockSkew: skew, ClockMeasuredAt: at}
	}
	self := member("self", 0)
	unmeasured := gossip.Member{Name: "b", Meta: gossip.Meta{Name: "h-b"}, State: gossip.StateAlive}
	dead := member("b", time.Hour)
	dead.State = gossip.StateDead
	// Each step is one view; want is what it logs, as "LEVEL prefix".
	steps := []struct {
		name string
		view []gossip.Member
		want []string
	}{
		{"all in sync", []gossip.Member{self, member("b", time.Second), member("c", -time.Second)}, nil},
		{"not measured yet", []gossip.Member{self, unmeasured}, nil},
		{"b an hour ahead", []gossip.Member{self, member("b", time.Hour), member("c", 0)},
			[]string{"WARN clock skew: host h-b's clock is 3600.0 s ahead of this host's (limit 30 s)"}},
		{"still ahead: no repeat", []gossip.Member{self, member("b", time.Hour), member("c", 0)}, nil},
		{"dead keeps the state", []gossip.Member{self, dead, member("c", 0)}, nil},
		{"within the hysteresis", []gossip.Member{self, member("b", 28*time.Second), member("c", 0)}, nil},
		{"back", []gossip.Member{self, member("b", 10*time.Millisecond), member("c", 0)},
			[]string{"INFO clock skew resolved: host h-b's clock is 0.0 s ahead of this host's"}},
		{"this host is the odd one", []gossip.Member{self, member("b", -time.Minute), member("c", -time.Minute)}, []string{
			"WARN clock skew: host h-b's clock is 60.0 s behind",
			"WARN clock skew: host h-c's clock is 60.0 s behind",
			"WARN clock skew: this host's clock is more than 30 s off from 2 of the 2 other members",
		}},
		{"b forgotten, c back", []gossip.Member{self, member("c", 0)}, []string{
			"INFO clock skew resolved: host h-c's clock",
			"INFO clock skew resolved: this host's clock agrees with most members again",
		}},
		{"b returns in sync: nothing to resolve", []gossip.Member{self, member("b", 0), member("c", 0)}, nil},
	}
	rec := &logRecorder{}
	w := NewClockWatch(slog.New(rec), "self", 30*time.Second)
	for _, st := range steps {
		w.Observe(st.view)
		got := rec.take()
		ok := len(got) == len(st.want)
		for i := 0; ok && i < len(got); i++ {
			ok = strings.HasPrefix(got[i], st.want[i])
		}
		if !ok {
			t.Errorf("%s: observe logged %q; want lines starting %q", st.name, got, st.want)
		}
	}
}

func TestMostOff(t *testing.T) {
	tests := []struct {
		off, of int
		want    bool
	}{
		{0, 0, false}, {1, 1, false}, {2, 2, true}, {1, 2, false}, {2, 3, true}, {1, 3, false},
	}
	for _, tt := range tests {
		if got := MostOff(tt.off, tt.of); got != tt.want {
			t.Errorf("MostOff(%d, %d) = %v; want %v", tt.off, tt.of, got, tt.want)
		}
	}
}

func TestCheckMemberClock(t *testing.T) {
	sent := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	got := sent.Add(200 * time.Millisecond)
	tests := []struct {
		name   string
		member time.Time
		want   string // prefix of the one line logged; "" for none
	}{
		{"no clock (older member)", time.Time{}, ""},
		{"in the round trip", sent.Add(100 * time.Millisecond), ""},
		{"at the limit after", got.Add(30 * time.Second), ""},
		{"at the limit before", sent.Add(-30 * time.Second), ""},
		{"an hour ahead", sent.Add(time.Hour), "WARN clock of the member that admitted this host is at least 3599.8 s ahead of"},
		{"a minute behind", sent.Add(-time.Minute), "WARN clock of the member that admitted this host is at least 60.0 s behind"},
	}
	for _, tt := range tests {
		rec := &logRecorder{}
		CheckMemberClock(slog.New(rec), 30*time.Second, tt.member, sent, got)
		lines := rec.take()
		ok := len(lines) == 0 && tt.want == ""
		if len(lines) == 1 && tt.want != "" {
			ok = strings.HasPrefix(lines[0], tt.want)
		}
		if !ok {
			t.Errorf("%s: CheckMemberClock logged %q; want %q", tt.name, lines, tt.want)
		}
	}
}
