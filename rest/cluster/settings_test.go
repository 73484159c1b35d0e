package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest/cluster"
	"github.com/peerstack/peerstack/rest/resttest"
)

// settingsBackend is the in-memory backend with a scripted storage check.
type settingsBackend struct {
	*resttest.Backend
	mu      sync.Mutex
	checked []string
	bad     map[string]error // storage → CheckStorage error
}

func (b *settingsBackend) CheckStorage(_ context.Context, storage string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.checked = append(b.checked, storage)
	return b.bad[storage]
}

func (b *settingsBackend) checks() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.checked...)
}

type settingsEnv struct {
	b                   *settingsBackend
	admin, member, anon *resttest.Client
}

func newSettingsEnv(t testing.TB, st statedb.Settings) *settingsEnv {
	t.Helper()
	b := &settingsBackend{Backend: resttest.New(), bad: map[string]error{
		"nfs://down/export": errors.New("cannot reach NFS server down: portmapper: connection refused"),
	}}
	seed := b.Bootstrap(t, st, "secret")
	demo, user := b.ProjectUser(t, "demo", "alice", "pw", "member")
	ts := resttest.NewServer(t, b, cluster.SettingsService(b))
	anon := &resttest.Client{T: t, Base: ts.URL}
	return &settingsEnv{
		b:      b,
		admin:  anon.With(b.Token(seed.Admin.ID, seed.Project.ID)),
		member: anon.With(b.Token(user.ID, demo.ID)),
		anon:   anon,
	}
}

func decodeSettings(t testing.TB, r *resttest.Resp) cluster.Settings {
	t.Helper()
	var out struct {
		Settings cluster.Settings `json:"settings"`
	}
	r.Decode(t, &out)
	return out.Settings
}

func TestSettingsPolicy(t *testing.T) {
	e := newSettingsEnv(t, statedb.Settings{})
	for _, tc := range []struct {
		name   string
		c      *resttest.Client
		method string
		want   int
	}{
		{"admin reads", e.admin, "GET", http.StatusOK},
		{"member reads", e.member, "GET", http.StatusForbidden}, // the storage URL is for admins only
		{"anonymous reads", e.anon, "GET", http.StatusUnauthorized},
		{"admin patches", e.admin, "PATCH", http.StatusOK},
		{"member patches", e.member, "PATCH", http.StatusForbidden},
		{"anonymous patches", e.anon, "PATCH", http.StatusUnauthorized},
	} {
		var body any
		if tc.method == "PATCH" {
			body = map[string]any{"image_copies": 3}
		}
		before := e.b.Index()
		r := tc.c.Do(tc.method, "/cluster/v1/settings", body)
		if r.Status != tc.want {
			t.Errorf("%s: %s = %d %s; want %d", tc.name, tc.method, r.Status, r.Body, tc.want)
		}
		if tc.want != http.StatusOK && e.b.Index() != before {
			t.Errorf("%s: a refused request applied %v", tc.name, e.b.AppliedSince(before))
		}
	}
}

func TestSettingsRoundTrip(t *testing.T) {
	e := newSettingsEnv(t, statedb.Settings{})
	r := e.admin.Do("GET", "/cluster/v1/settings", nil)
	got := decodeSettings(t, r)
	want := cluster.Settings{StorageType: "local", FormerStorage: []string{}, ImageCopies: statedb.DefaultImageCopies,
		ImageSizeLimit: statedb.DefaultImageSizeLimit}
	if r.Status != http.StatusOK || !reflect.DeepEqual(got, want) {
		t.Fatalf("GET = %d %+v; want 200 %+v", r.Status, got, want)
	}

	steps := []struct {
		body   string
		want   cluster.Settings
		checks []string
	}{
		{`{"storage":"nfs://nas/export/ps/","image_copies":3,"image_size_limit":1073741824}`,
			cluster.Settings{Storage: "nfs://nas/export/ps", StorageType: "nfs", FormerStorage: []string{}, ImageCopies: 3, ImageSizeLimit: 1 << 30},
			[]string{"nfs://nas/export/ps"}},
		// The same storage again is not checked again; the others stay.
		{`{"storage":"nfs://nas/export/ps"}`,
			cluster.Settings{Storage: "nfs://nas/export/ps", StorageType: "nfs", FormerStorage: []string{}, ImageCopies: 3, ImageSizeLimit: 1 << 30},
			nil},
		{`{"storage":"nfs://nas2/b","image_size_limit":0}`,
			cluster.Settings{Storage: "nfs://nas2/b", StorageType: "nfs", FormerStorage: []string{"nfs://nas/export/ps"}, ImageCopies: 3,
				ImageSizeLimit: statedb.DefaultImageSizeLimit},
			[]string{"nfs://nas2/b"}},
		// Local storage needs no check.
		{`{"storage":""}`,
			cluster.Settings{StorageType: "local", FormerStorage: []string{"nfs://nas2/b", "nfs://nas/export/ps"}, ImageCopies: 3,
				ImageSizeLimit: statedb.DefaultImageSizeLimit},
			nil},
		{`{}`,
			cluster.Settings{StorageType: "local", FormerStorage: []string{"nfs://nas2/b", "nfs://nas/export/ps"}, ImageCopies: 3,
				ImageSizeLimit: statedb.DefaultImageSizeLimit},
			nil},
	}
	for _, s := range steps {
		before := len(e.b.checks())
		r := e.admin.Do("PATCH", "/cluster/v1/settings", s.body)
		if got := decodeSettings(t, r); r.Status != http.StatusOK || !reflect.DeepEqual(got, s.want) {
			t.Fatalf("PATCH %s = %d %s; want 200 %+v", s.body, r.Status, r.Body, s.want)
		}
		if got := e.b.checks()[before:]; len(got)+len(s.checks) != 0 && !reflect.DeepEqual(got, s.checks) {
			t.Errorf("PATCH %s checked storage %v; want %v", s.body, got, s.checks)
		}
		// Reading back gives the same.
		if got := decodeSettings(t, e.admin.Do("GET", "/cluster/v1/settings", nil)); !reflect.DeepEqual(got, s.want) {
			t.Fatalf("GET after PATCH %s = %+v; want %+v", s.body, got, s.want)
		}
	}
}

func TestSettingsBadRequests(t *testing.T) {
	e := newSettingsEnv(t, statedb.Settings{Storage: "nfs://nas/a", ImageCopies: 2})
	for _, tc := range []struct {
		body string
		want int
		msg  string
	}{
		{`{"storage":"nfs://nas"}`, 400, "want nfs://server/export"},
		{`{"storage":"http://nas/export"}`, 400, "nfs://"},
		{`{"storage":"nfs://nas:2049/x"}`, 400, "port"},
		{`{"storage":"nfs://down/export"}`, 400, "cannot reach NFS server down"},
		{`{"storage":7}`, 400, "want a string"},
		{`{"storage":null}`, 400, "null"},
		{`{"image_copies":0}`, 400, "image_copies"},
		{`{"image_copies":2.5}`, 400, "image_copies"},
		{`{"image_copies":1001}`, 400, "image_copies"},
		{`{"image_copies":"3"}`, 400, "image_copies"},
		{`{"image_size_limit":-1}`, 400, "image_size_limit"},
		{`{"image_size_limit":"2GiB"}`, 400, "image_size_limit"},
		{`{"mtu":9000}`, 400, `Unknown setting \"mtu\"`},
		// A good field next to a bad one is not applied either.
		{`{"image_copies":5,"storage":"nfs://down/export"}`, 400, "cannot reach"},
		{`{"image_copies":5,"bogus":1}`, 400, "bogus"},
		{`[]`, 400, "Malformed"},
		{`{`, 400, "Malformed"},
	} {
		before := e.b.Index()
		r := e.admin.Do("PATCH", "/cluster/v1/settings", tc.body)
		if r.Status != tc.want || !strings.Contains(string(r.Body), tc.msg) {
			t.Errorf("PATCH %s = %d %s; want %d with %q", tc.body, r.Status, r.Body, tc.want, tc.msg)
		}
		if e.b.Index() != before {
			t.Errorf("PATCH %s applied %v", tc.body, e.b.AppliedSince(before))
		}
	}
	got := decodeSettings(t, e.admin.Do("GET", "/cluster/v1/settings", nil))
	if got.Storage != "nfs://nas/a" || got.ImageCopies != 2 {
		t.Fatalf("settings after refused patches = %+v; want the bootstrap ones", got)
	}
}

// FuzzSettingsPatch sends arbitrary bodies: never a 5xx, and a refused
// one changes nothing.
func FuzzSettingsPatch(f *testing.F) {
	for _, s := range []string{
		`{"storage":"nfs://nas/x","image_copies":3,"image_size_limit":1073741824}`, `{"storage":""}`,
		`{"image_copies":1e3}`, `{"image_copies":1000}`, `{"image_copies":1001}`, `{"image_size_limit":9223372036854775808}`, `{"storage":"nfs://[::1]/x"}`,
		`{"storage":"nfs://down/export"}`, `null`, ``, `{}`, `{"a":{}}`, `{"storage":"nfs://h/\u0000"}`,
	} {
		f.Add(s)
	}
	e := newSettingsEnv(f, statedb.Settings{})
	f.Fuzz(func(t *testing.T, body string) {
		c := *e.admin
		c.T = t
		before := e.b.Index()
		r := c.Do("PATCH", "/cluster/v1/settings", body)
		if r.Status >= 500 || (r.Status != http.StatusOK && r.Status < 400) {
			t.Fatalf("PATCH %q = %d %s", body, r.Status, r.Body)
		}
		if r.Status != http.StatusOK && e.b.Index() != before {
			t.Fatalf("PATCH %q = %d but applied %v", body, r.Status, e.b.AppliedSince(before))
		}
		for _, a := range e.b.AppliedSince(before) {
			if a.Err != nil {
				t.Fatalf("PATCH %q = %d; the state machine refused what the handler let through: %v", body, r.Status, a.Err)
			}
		}
	})
}

func ExampleSettingsOf() {
	s := cluster.SettingsOf(&statedb.Settings{Storage: "nfs://nas/export", FormerStorage: []string{"nfs://old/x"}})
	fmt.Println(s.StorageType, s.ImageCopies, s.ImageSizeLimit, s.FormerStorage)
	// Output: nfs 2 68719476736 [nfs://old/x]
}
