package statedb

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func TestCheckStorageURL(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"nfs://nas/export", true},
		{"nfs://10.0.0.5/export/peerstack", true},
		{"nfs://nas.example.com/srv/nfs/a-b_c.d", true},
		{"nfs://[fd00::5]/export", true},
		{"nfs://nas/export/", true},
		{"", false},
		{"nas:/export", false},
		{"/var/lib/peerstack", false},
		{"http://nas/export", false},
		{"NFS://nas/export", false}, // the backend type is told by the "nfs://" prefix
		{"nfs://nas", false},
		{"nfs://nas/", false},
		{"nfs:///export", false},
		{"nfs://nas:2049/export", false},
		{"nfs://user@nas/export", false},
		{"nfs://nas/export?uid=0", false},
		{"nfs://nas/export#x", false},
		{"nfs://nas/exp%20ort", false},
		{"nfs://nas//export", false},
		{"nfs://nas/export/../etc", false},
		{"nfs://nas/./export", false},
		{"nfs:nas/export", false},
		{"nfs://nas/export\n", false},
		{"nfs://nas/exp ort", false},
		{"nfs://nas/export/ü", false},
		{"nfs://nas/export/a;b", false},
		{"nfs://na_s/export", false},
		{"nfs://nas/export/a+b=c,d@e:f~g", true},
	} {
		err := CheckStorageURL(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("CheckStorageURL(%q) = %v; want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckStorageURL(%q) = %v; want a KindInvalid error", tc.in, err)
		}
	}
}

// settingsEnv is a bootstrapped store to patch settings in.
type settingsEnv struct {
	t   *testing.T
	s   *Store
	idx uint64
}

func newSettingsEnv(t *testing.T, st Settings) *settingsEnv {
	t.Helper()
	e := &settingsEnv{t: t, s: NewStore()}
	e.idx++
	r := apply(t, e.s, e.idx, CmdBootstrap, "boot", BootstrapCmd{
		Config:     ClusterConfig{ClusterID: "c", Settings: st},
		Member:     Member{ID: "host1", Name: "h1"},
		Project:    Project{ID: "p1", Name: "admin"},
		Admin:      User{ID: "u1", Name: "admin"},
		Assignment: Assignment{ProjectID: "p1", UserID: "u1", RoleID: "r1"},
		SigningKey: SigningKey{ID: "k1"},
	})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	return e
}

func (e *settingsEnv) patch(p UpdateSettingsCmd) error {
	e.t.Helper()
	e.idx++
	return apply(e.t, e.s, e.idx, CmdUpdateSettings, fmt.Sprintf("req-%d", e.idx), p).Err
}

func (e *settingsEnv) settings() Settings {
	e.t.Helper()
	cfg, ok := e.s.Snapshot().Cluster()
	if !ok {
		e.t.Fatal("no cluster config")
	}
	return cfg.Settings
}

func TestApplyUpdateSettingsSequence(t *testing.T) {
	base := Settings{Voters: 3, MTU: 1450, Weigher: "pack", ImageCopies: 2}
	e := newSettingsEnv(t, base)
	const a, b = "nfs://nas/a", "nfs://nas2/b"
	for _, step := range []struct {
		name  string
		patch UpdateSettingsCmd
		want  Settings
	}{
		{"empty patch", UpdateSettingsCmd{}, base},
		{"local to A", UpdateSettingsCmd{Storage: ptr(a + "/")},
			Settings{Voters: 3, MTU: 1450, Weigher: "pack", ImageCopies: 2, Storage: a}},
		{"same again", UpdateSettingsCmd{Storage: ptr(a)},
			Settings{Voters: 3, MTU: 1450, Weigher: "pack", ImageCopies: 2, Storage: a}},
		{"A to B, copies and limit", UpdateSettingsCmd{Storage: ptr(b), ImageCopies: ptr(3), ImageSizeLimit: ptr(int64(1 << 30))},
			Settings{Voters: 3, MTU: 1450, Weigher: "pack", ImageCopies: 3, ImageSizeLimit: 1 << 30, Storage: b, FormerStorage: []string{a}}},
		{"B to local", UpdateSettingsCmd{Storage: ptr("")},
			Settings{Voters: 3, MTU: 1450, Weigher: "pack", ImageCopies: 3, ImageSizeLimit: 1 << 30, FormerStorage: []string{b, a}}},
		{"local to A again", UpdateSettingsCmd{Storage: ptr(a), ImageSizeLimit: ptr(int64(0))},
			Settings{Voters: 3, MTU: 1450, Weigher: "pack", ImageCopies: 3, Storage: a, FormerStorage: []string{b}}},
		{"A to B again", UpdateSettingsCmd{Storage: ptr(b)},
			Settings{Voters: 3, MTU: 1450, Weigher: "pack", ImageCopies: 3, Storage: b, FormerStorage: []string{a}}},
	} {
		if err := e.patch(step.patch); err != nil {
			t.Fatalf("%s: apply = %v; want nil", step.name, err)
		}
		if got := e.settings(); !reflect.DeepEqual(got, step.want) {
			t.Fatalf("%s: settings = %+v; want %+v", step.name, got, step.want)
		}
	}
}

func TestApplyUpdateSettingsInvalid(t *testing.T) {
	base := Settings{Storage: "nfs://nas/a", ImageCopies: 2, ImageSizeLimit: 5 << 20}
	for _, tc := range []struct {
		name  string
		patch UpdateSettingsCmd
	}{
		{"not nfs", UpdateSettingsCmd{Storage: ptr("smb://nas/share")}},
		{"no export", UpdateSettingsCmd{Storage: ptr("nfs://nas")}},
		{"port", UpdateSettingsCmd{Storage: ptr("nfs://nas:2049/x")}},
		{"zero copies", UpdateSettingsCmd{ImageCopies: ptr(0)}},
		{"negative copies", UpdateSettingsCmd{ImageCopies: ptr(-1)}},
		{"too many copies", UpdateSettingsCmd{ImageCopies: ptr(1001)}},
		{"negative limit", UpdateSettingsCmd{ImageSizeLimit: ptr(int64(-1))}},
		// One bad field and the good ones are not applied either.
		{"bad storage with good copies", UpdateSettingsCmd{Storage: ptr("nfs://nas"), ImageCopies: ptr(5), ImageSizeLimit: ptr(int64(1))}},
		{"good storage with bad copies", UpdateSettingsCmd{Storage: ptr("nfs://other/b"), ImageCopies: ptr(0)}},
		{"good storage with bad limit", UpdateSettingsCmd{Storage: ptr(""), ImageSizeLimit: ptr(int64(-5))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSettingsEnv(t, base)
			err := e.patch(tc.patch)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("apply(%+v) = %v; want a KindInvalid error", tc.patch, err)
			}
			if got := e.settings(); !reflect.DeepEqual(got, base) {
				t.Fatalf("settings after a refused patch = %+v; want unchanged %+v", got, base)
			}
		})
	}
}

func TestApplyUpdateSettingsBeforeBootstrap(t *testing.T) {
	s := NewStore()
	r := apply(t, s, 1, CmdUpdateSettings, "r1", UpdateSettingsCmd{ImageCopies: ptr(3)})
	if !errors.Is(r.Err, ErrConflict) {
		t.Fatalf("apply before bootstrap = %v; want a KindConflict error", r.Err)
	}
	if _, ok := s.Snapshot().Cluster(); ok {
		t.Fatal("a cluster config appeared")
	}
}

// TestApplyUpdateSettingsDeterministic applies the same log to two stores
// and compares the results.
func TestApplyUpdateSettingsDeterministic(t *testing.T) {
	log := []UpdateSettingsCmd{
		{Storage: ptr("nfs://a/x")}, {Storage: ptr("nfs://b/y"), ImageCopies: ptr(4)},
		{ImageCopies: ptr(0)}, {Storage: ptr("")}, {ImageSizeLimit: ptr(int64(7))},
	}
	var got [2]Settings
	for i := range got {
		e := newSettingsEnv(t, Settings{})
		for _, p := range log {
			_ = e.patch(p)
		}
		got[i] = e.settings()
	}
	if !reflect.DeepEqual(got[0], got[1]) {
		t.Fatalf("two stores after the same log: %+v and %+v", got[0], got[1])
	}
	want := Settings{ImageCopies: 4, ImageSizeLimit: 7, FormerStorage: []string{"nfs://b/y", "nfs://a/x"}}
	if !reflect.DeepEqual(got[0], want) {
		t.Fatalf("settings = %+v; want %+v", got[0], want)
	}
}

func TestSettingsEffective(t *testing.T) {
	for _, tc := range []struct {
		in     Settings
		copies int
		limit  int64
	}{
		{Settings{}, DefaultImageCopies, DefaultImageSizeLimit},
		{Settings{ImageCopies: 5, ImageSizeLimit: 1024}, 5, 1024},
	} {
		if got := tc.in.EffectiveImageCopies(); got != tc.copies {
			t.Errorf("EffectiveImageCopies(%+v) = %d; want %d", tc.in, got, tc.copies)
		}
		if got := tc.in.EffectiveImageSizeLimit(); got != tc.limit {
			t.Errorf("EffectiveImageSizeLimit(%+v) = %d; want %d", tc.in, got, tc.limit)
		}
	}
}

func TestVolumeShared(t *testing.T) {
	for _, tc := range []struct {
		storage, path string
		want          bool
	}{
		{"", "/var/lib/peerstack/volumes/vol-1.qcow2", false},
		{"nfs://nas/a", "/var/lib/peerstack/volumes/vol-1.qcow2", false},
		{"", "nfs://nas/a/vol-1.qcow2", true},
		{"nfs://nas/a", "nfs://nas/a/vol-1.qcow2", true},
		{"nfs://nas/a", "", true},
		{"", "", false},
	} {
		e := newSettingsEnv(t, Settings{Storage: tc.storage})
		if got := e.s.Snapshot().VolumeShared(&Volume{Path: tc.path}); got != tc.want {
			t.Errorf("VolumeShared(storage %q, path %q) = %v; want %v", tc.storage, tc.path, got, tc.want)
		}
	}
}
