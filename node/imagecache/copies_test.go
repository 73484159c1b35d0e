package imagecache_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent/agenttest"
	"github.com/peerstack/peerstack/node/imagecache"
)

func TestDesiredCopies(t *testing.T) {
	st := agenttest.NewState()
	hosts := []string{"a", "b", "c", "d", "e"}
	for _, h := range hosts {
		if err := st.Apply(statedb.CmdRegisterMember, statedb.Member{ID: h, Name: h}); err != nil {
			t.Fatal(err)
		}
	}
	sn := st.Snapshot()
	all := map[string]bool{"a": true, "b": true, "c": true, "d": true, "e": true}
	without := func(down ...string) map[string]bool {
		m := map[string]bool{}
		for h := range all {
			if !slices.Contains(down, h) {
				m[h] = true
			}
		}
		return m
	}
	img := func(holders, desired []string) *statedb.Image {
		return &statedb.Image{ID: "img", Status: statedb.ImageActive, Holders: holders, DesiredHolders: desired}
	}
	is := func(want ...string) func([]string) bool {
		return func(got []string) bool { return slices.Equal(got, want) }
	}
	cases := []struct {
		name   string
		img    *statedb.Image
		alive  map[string]bool
		copies int
		ok     bool
		check  func([]string) bool
	}{
		{"kept as wanted", img([]string{"a", "b"}, []string{"b", "a"}), all, 2, true, is("b", "a")},
		{"the holders first", img([]string{"c", "a"}, nil), all, 2, true, is("c", "a")},
		{"a wanted host fetching stays", img([]string{"a", "c"}, []string{"a", "d"}), all, 2, true, is("a", "d")},
		{"wanted holders before wanted fetchers", img([]string{"a", "b"}, []string{"d", "b"}), all, 1, true, is("b")},
		{"fewer copies keeps the holders", img([]string{"a", "b"}, []string{"c", "a", "b"}), all, 2, true, is("a", "b")},
		{"a down wanted host is replaced", img([]string{"a", "b"}, []string{"a", "b"}), without("b"), 2, true,
			func(got []string) bool { return len(got) == 2 && got[0] == "a" && got[1] != "b" && all[got[1]] }},
		{"non-members never", img([]string{"a", "zz"}, []string{"zz"}), map[string]bool{"a": true, "zz": true}, 2, true, is("a")},
		{"no holder alive: unchanged", img([]string{"a"}, []string{"a", "b"}), without("a"), 2, false, nil},
		{"shared storage wants none", img([]string{"a", statedb.ImageHolderShared}, []string{"a"}), all, 2, true, is()},
		{"not active", &statedb.Image{ID: "img", Status: statedb.ImageDeleted, Holders: []string{"a"}}, all, 2, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := imagecache.DesiredCopies(sn, tc.img, tc.alive, tc.copies)
			if ok != tc.ok || (ok && !tc.check(got)) {
				t.Errorf("DesiredCopies(holders %v, wanted %v, %d copies) = %v, %v", tc.img.Holders, tc.img.DesiredHolders, tc.copies, got, ok)
			}
		})
	}

	// New images spread over the hosts instead of piling on one.
	first := map[string]int{}
	for i := range 50 {
		got, _ := imagecache.DesiredCopies(sn, &statedb.Image{ID: fmt.Sprint("img-", i), Status: statedb.ImageActive,
			Holders: []string{"a"}}, all, 2)
		if len(got) != 2 || got[0] != "a" {
			t.Fatalf("image %d: %v; want the holder a and one more", i, got)
		}
		first[got[1]]++
	}
	if len(first) < 3 {
		t.Errorf("second copies of 50 images landed on %v; want them spread over at least 3 hosts", first)
	}
}

// fakeShare is a shared storage in memory.
type fakeShare struct {
	mu      sync.Mutex
	removed []string // "url/sum"
}

func (s *fakeShare) open(url string) (imagecache.Share, error) { return shareAt{s, url}, nil }

type shareAt struct {
	s   *fakeShare
	url string
}

func (a shareAt) Open(context.Context, string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("")), nil
}
func (a shareAt) Put(context.Context, string, string, int64) error { return nil }
func (a shareAt) Remove(_ context.Context, sum string) error {
	a.s.mu.Lock()
	a.s.removed = append(a.s.removed, a.url+"/"+sum)
	a.s.mu.Unlock()
	return nil
}

// TestCopierTick: one tick records the wanted copies, forgets a holder
// that left, drops a deleted image from the shared storage and kills an
// upload whose host has been gone past the grace.
func TestCopierTick(t *testing.T) {
	st := agenttest.NewState()
	start := time.Unix(100000, 0)
	st.Now = func() time.Time { return start }
	prop := &agenttest.Proposer{State: st}
	apply := func(typ statedb.CmdType, payload any) {
		t.Helper()
		if err := st.Apply(typ, payload); err != nil {
			t.Fatalf("apply %d: %v", typ, err)
		}
	}
	apply(statedb.CmdBootstrap, statedb.BootstrapCmd{Config: statedb.ClusterConfig{ClusterID: "c",
		Settings: statedb.Settings{ImageCopies: 2, Storage: "nfs://srv/new", FormerStorage: []string{"nfs://srv/old"}}},
		Member: statedb.Member{ID: "a", Name: "a"}, Project: statedb.Project{ID: "p", Name: "admin"},
		Admin: statedb.User{ID: "u", Name: "admin"}, Roles: []statedb.Role{{ID: "r", Name: "admin"}},
		Assignment: statedb.Assignment{ProjectID: "p", UserID: "u", RoleID: "r"}, SigningKey: statedb.SigningKey{ID: "k", Secret: []byte("k")}})
	for _, h := range []string{"b", "c", "gone"} {
		apply(statedb.CmdRegisterMember, statedb.Member{ID: h, Name: h})
	}
	sum := strings.Repeat("a", 64)
	upload := func(id string, holders ...string) {
		apply(statedb.CmdCreateImage, statedb.Image{ID: id, Name: id, ProjectID: "p", DiskFormat: "raw", ContainerFormat: "bare"})
		apply(statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: id, HostID: holders[0]})
		if len(holders) > 1 || holders[0] != "gone" {
			apply(statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: id, Size: 1, SHA256: sum, Holders: holders})
		}
	}
	upload("local", "a", "gone")
	upload("onshare", "b", statedb.ImageHolderShared)
	apply(statedb.CmdDeleteImage, statedb.ImageRef{ID: "onshare"})
	upload("stuck", "gone")
	apply(statedb.CmdRemoveMember, statedb.RemoveMemberCmd{ID: "gone"})

	share := &fakeShare{}
	now := start.Add(time.Minute)
	cp, err := imagecache.NewCopier(imagecache.CopierConfig{State: st, Proposer: prop, OpenShare: share.open, Logger: logger(),
		Alive: func() map[string]bool { return map[string]bool{"a": true, "b": true, "c": true} },
		Now:   func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	cp.Tick(t.Context())
	sn := st.Snapshot()
	local, _ := sn.Image("local")
	if local.HasHolder("gone") || len(local.DesiredHolders) != 2 || local.DesiredHolders[0] != "a" {
		t.Fatalf("local image: holders %v, wanted %v; want the departed holder forgotten and a plus one more wanted",
			local.Holders, local.DesiredHolders)
	}
	if img, _ := sn.Image("onshare"); img.HasHolder(statedb.ImageHolderShared) || !img.HasHolder("b") {
		t.Errorf("deleted image's holders after the tick = %v; want the share dropped, b left to release its copy", img.Holders)
	}
	if want := []string{"nfs://srv/new/" + sum, "nfs://srv/old/" + sum}; !slices.Equal(share.removed, want) {
		t.Errorf("share removals = %v; want %v", share.removed, want)
	}
	if stuck, _ := sn.Image("stuck"); stuck.Status != statedb.ImageSaving {
		t.Errorf("upload killed within the grace: %s", stuck.Status)
	}
	n := len(prop.Proposals())
	cp.Tick(t.Context())
	if got := prop.Proposals()[n:]; len(got) != 0 {
		t.Errorf("a second tick on the same state proposed %+v; want nothing", got)
	}
	now = start.Add(time.Hour)
	cp.Tick(t.Context())
	if stuck, _ := st.Snapshot().Image("stuck"); stuck.Status != statedb.ImageKilled {
		t.Errorf("upload of a host gone for an hour is %s; want killed", stuck.Status)
	}
}

// TestCopierRun: a running Copier records the copies of a new image on
// its own, and stops with its context.
func TestCopierRun(t *testing.T) {
	st := agenttest.NewState()
	for _, h := range []string{"a", "b"} {
		if err := st.Apply(statedb.CmdRegisterMember, statedb.Member{ID: h, Name: h}); err != nil {
			t.Fatal(err)
		}
	}
	cp, err := imagecache.NewCopier(imagecache.CopierConfig{State: st, Proposer: &agenttest.Proposer{State: st}, Logger: logger(),
		Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); cp.Run(ctx) }()
	for _, c := range []struct {
		typ     statedb.CmdType
		payload any
	}{
		{statedb.CmdCreateImage, statedb.Image{ID: "i", Name: "i", ProjectID: "p", DiskFormat: "raw", ContainerFormat: "bare"}},
		{statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: "i", HostID: "a"}},
		{statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: "i", Size: 1, SHA256: strings.Repeat("b", 64), Holders: []string{"a"}}},
	} {
		if err := st.Apply(c.typ, c.payload); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		img, _ := st.Snapshot().Image("i")
		if slices.Equal(img.DesiredHolders, []string{"a", "b"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wanted holders = %v; want [a b] (default 2 copies, the holder first)", img.DesiredHolders)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}
