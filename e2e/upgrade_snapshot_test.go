package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// snapshotOften makes the previous release's source take a Raft snapshot
// after every 8 entries (checked every 1–2 s) and keep no log behind it,
// so that its whole state lives in the snapshot. Only when a snapshot is
// taken changes, not what it contains: the format is the release's own.
func snapshotOften(dir string) error {
	path := filepath.Join(dir, "consensus", "consensus.go")
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for old, repl := range map[string]string{
		"rc.SnapshotThreshold = 8192": "rc.SnapshotThreshold = 8\n\trc.SnapshotInterval = time.Second",
		"rc.TrailingLogs = 10240":     "rc.TrailingLogs = 0",
	} {
		if !bytes.Contains(src, []byte(old)) {
			return fmt.Errorf("%s has no %q", path, old)
		}
		src = bytes.Replace(src, []byte(old), []byte(repl), 1)
	}
	return os.WriteFile(path, src, 0o644)
}

// snapshotsAfter returns the Raft snapshots under dataDir whose metadata
// was written after t, with their indexes.
func snapshotsAfter(dataDir string, t time.Time) map[string]uint64 {
	found := map[string]uint64{}
	_ = filepath.WalkDir(dataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "meta.json" || filepath.Base(filepath.Dir(filepath.Dir(path))) != "snapshots" {
			return nil
		}
		info, err := d.Info()
		if err != nil || !info.ModTime().After(t) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		var meta struct{ Index uint64 }
		if json.Unmarshal(b, &meta) == nil && meta.Index > 0 {
			found[filepath.Dir(path)] = meta.Index
		}
		return nil
	})
	return found
}

// TestRestoreSnapshotOfPreviousRelease: a host of the previous release
// makes state through the openstack client and takes a Raft snapshot
// holding all of it (its log behind the snapshot compacted away); the
// current release, started on that data directory, must restore every
// object from the snapshot — same ids, the user's password still valid,
// the image's bytes intact — write on top of it and restart again.
func TestRestoreSnapshotOfPreviousRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	oldBin := buildRelease(t, previousRelease, snapshotOften)
	newBin := Binary(t)
	dir := filepath.Join(t.TempDir(), "snap-a")
	p := startDaemonBin(t, oldBin, "snap-a", dir, "agent", "--network", "none")
	clouds := filepath.Join(dir, "clouds.yaml")
	osc := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(Run(t, clouds, "openstack", args...))
	}
	id := func(args ...string) string {
		t.Helper()
		return osc(append(args, "-f", "value", "-c", "id")...)
	}

	// State of every kind the previous release keeps.
	want := map[string][]string{} // id → the show command
	proj := id("project", "create", "snap-proj")
	want[proj] = []string{"project", "show", proj}
	user := id("user", "create", "--project", "snap-proj", "--password", "snap-secret-1", "snap-user")
	want[user] = []string{"user", "show", user}
	osc("role", "add", "--user", "snap-user", "--project", "snap-proj", "member")
	flavor := id("flavor", "create", "--vcpus", "1", "--ram", "256", "--disk", "1", "snap-flavor")
	want[flavor] = []string{"flavor", "show", flavor}
	net := id("network", "create", "snap-net")
	want[net] = []string{"network", "show", net}
	sub := id("subnet", "create", "--network", "snap-net", "--subnet-range", "10.72.0.0/24", "snap-sub")
	want[sub] = []string{"subnet", "show", sub}
	port := id("port", "create", "--network", "snap-net", "snap-port")
	want[port] = []string{"port", "show", port}
	body := bytes.Repeat([]byte("peerstack snapshot restore\n"), 1000)
	imgFile := filepath.Join(t.TempDir(), "snap.raw")
	if err := os.WriteFile(imgFile, body, 0o644); err != nil {
		t.Fatal(err)
	}
	img := id("image", "create", "--file", imgFile, "--disk-format", "raw", "--container-format", "bare", "snap-image")
	want[img] = []string{"image", "show", img}
	userClouds := cloudsYAML(t, p, p.APIAddr, "", map[string]string{"username": "snap-user", "password": "snap-secret-1",
		"project_name": "snap-proj", "user_domain_name": "Default", "project_domain_name": "Default"})
	portIP := osc("port", "show", port, "-f", "value", "-c", "fixed_ips")

	check := func(stage string) {
		t.Helper()
		for id, show := range want {
			if got := osc(append(show, "-f", "value", "-c", "id")...); got != id {
				t.Fatalf("%s: openstack %s = %q; want id %s", stage, strings.Join(show, " "), got, id)
			}
		}
		if got := osc("port", "show", port, "-f", "value", "-c", "fixed_ips"); got != portIP {
			t.Fatalf("%s: port %s fixed_ips %q; want %q", stage, port, got, portIP)
		}
		if got := osc("role", "assignment", "list", "--user", user, "--project", proj, "--names", "-f", "value", "-c", "Role"); got != "member" {
			t.Fatalf("%s: role assignments of snap-user = %q; want member", stage, got)
		}
		out, err := RunErr(userClouds, "openstack", "network", "list", "-f", "value", "-c", "Name")
		if err != nil {
			t.Fatalf("%s: snap-user cannot use the cloud: %v\n%s", stage, err, out)
		}
		saved := filepath.Join(t.TempDir(), "saved.raw")
		osc("image", "save", "--file", saved, img)
		if got, err := os.ReadFile(saved); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("%s: image bytes differ (%d of %d bytes, %v)", stage, len(got), len(body), err)
		}
	}

	check("made by " + previousVersion)

	// Enough writes after the state for a snapshot that holds all of it.
	written := time.Now()
	for i := range 10 {
		osc("network", "create", fmt.Sprintf("snap-pad-%d", i))
	}
	var snaps map[string]uint64
	deadline := time.Now().Add(60 * time.Second)
	for snaps = snapshotsAfter(dir, written); len(snaps) == 0; snaps = snapshotsAfter(dir, written) {
		if time.Now().After(deadline) {
			t.Fatalf("the previous release took no Raft snapshot in 60 s under %s", dir)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("previous release's snapshots: %v", snaps)
	p.Stop()

	// The current release on the same data directory.
	p.Bin = newBin
	p.Restart(t)
	waitVersions(t, clouds, map[string]string{"snap-a": currentVersion})
	check("restored by " + currentVersion)
	after := id("network", "create", "snap-after")
	want[after] = []string{"network", "show", after}
	p.Stop()
	p.Restart(t)
	check("restarted on " + currentVersion)
}
