package nodetest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/hv/storage"
	"github.com/peerstack/peerstack/hv/storage/nfstest"
	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/node/agent"
	"github.com/peerstack/peerstack/node/agent/agenttest"
	"github.com/peerstack/peerstack/rest"
)

// nasLink connects the test's network namespace to the NFS server's with
// a veth pair ("psset<hex>a" here, "psset<hex>b" there, on a random /30 of
// 100.64.0.0/10) and returns both ends' addresses: in-process nodes dial
// without namespace options, so they reach the export at nas. The link
// goes in t.Cleanup (and with the server's namespace anyway).
func nasLink(t *testing.T, ns string) (host, nas string) {
	t.Helper()
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	name := "psset" + hex.EncodeToString(rnd[:])
	base := fmt.Sprintf("100.%d.%d.", 64+int(rnd[0])%64, rnd[1])
	last := int(rnd[2]) % 64 * 4
	host, nas = base+fmt.Sprint(last+1), base+fmt.Sprint(last+2)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("link", "add", name+"a", "type", "veth", "peer", "name", name+"b", "netns", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name+"a").Run() })
	run("addr", "add", host+"/30", "dev", name+"a")
	run("link", "set", name+"a", "up")
	run("-n", ns, "addr", "add", nas+"/30", "dev", name+"b")
	run("-n", ns, "link", "set", name+"b", "up")
	return host, nas
}

// settingsEnv is a one-host cluster whose agent runs a fake hypervisor
// over the real volume store (qemu-img on the local dir or over nfs://).
type settingsEnv struct {
	t       *testing.T
	c       *Cluster
	n       *node.Node
	hv      *agenttest.Hypervisor
	token   string
	project string
	ic      *imageClient
}

func (e *settingsEnv) call(method, path, body string) (int, map[string]any) {
	e.t.Helper()
	return apiCall(e.t, e.c, method, e.c.URL(0)+path, e.token, body)
}

func (e *settingsEnv) patch(body string) (int, map[string]any) {
	e.t.Helper()
	return e.call("PATCH", "/cluster/v1/settings", body)
}

func (e *settingsEnv) settings() map[string]any {
	e.t.Helper()
	st, body := e.call("GET", "/cluster/v1/settings", "")
	s, _ := body["settings"].(map[string]any)
	if st != http.StatusOK || s == nil {
		e.t.Fatalf("GET settings = %d %v", st, body)
	}
	return s
}

func (e *settingsEnv) vpath(rest string) string { return "/volume/v3/" + e.project + rest }

// createVolume makes a volume through the API and waits until the agent
// made its file.
func (e *settingsEnv) createVolume(name string) *statedb.Volume {
	e.t.Helper()
	st, body := e.call("POST", e.vpath("/volumes"), `{"volume":{"size":1,"name":"`+name+`"}}`)
	if st != http.StatusAccepted {
		e.t.Fatalf("create volume %s = %d %v", name, st, body)
	}
	id, _ := body["volume"].(map[string]any)["id"].(string)
	waitStatus(e.c, id, statedb.VolumeAvailable)
	v, _ := e.n.State().Volume(id)
	return v
}

// volumeType is the one type `openstack volume type list` shows.
func (e *settingsEnv) volumeType() string {
	e.t.Helper()
	st, body := e.call("GET", e.vpath("/types"), "")
	types, _ := body["volume_types"].([]any)
	if st != http.StatusOK || len(types) != 1 {
		e.t.Fatalf("GET types = %d %v; want one type", st, body)
	}
	name, _ := types[0].(map[string]any)["name"].(string)
	return name
}

// virtualSize reads a volume file's virtual size with qemu-img, from the
// local file system (the export's directory is read, never changed,
// behind ganesha's back).
func virtualSize(t *testing.T, path string) int64 {
	t.Helper()
	s, err := storage.NewVolumeStore(filepath.Dir(path), storage.VolumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), path)
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	return info.VirtualSize
}

func fileExists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Stat(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

// TestSettingsStorageChange changes the cluster's storage at runtime, with
// a real ganesha NFS server: a cluster on local storage makes volume A and
// image X on the host; a bad or unreachable share is refused with a 400
// and changes nothing; after the change to the share, volume B and image
// Y land on the export, volume A (still local) attaches, detaches,
// extends and deletes where it lives, and the new image size limit gives
// Glance's 413. After a second change, image Y is still read from the
// share it was uploaded to, and its delete removes it there.
func TestSettingsStorageChange(t *testing.T) {
	srv := nfstest.Start(t) // skips without root
	hostIP, nasIP := nasLink(t, srv.NS)
	share1, share2 := "nfs://"+nasIP+"/export/ps1", "nfs://"+nasIP+"/export/ps2"

	hv := agenttest.NewHypervisor()
	c := NewCluster(t, 1, Options{Agent: func(int) node.AgentOptions {
		return node.AgentOptions{Hypervisor: hv, NetworkDriver: &agenttest.Network{}, Images: agenttest.AnyImage{},
			ResyncInterval: 300 * time.Millisecond, DetachTimeout: time.Second}
	}})
	ctx := t.Context()
	n := c.Node(0)
	p, ok := n.State().ProjectByName("admin")
	if !ok {
		t.Fatal("no admin project")
	}
	e := &settingsEnv{t: t, c: c, n: n, hv: hv, token: c.AdminToken(0), project: p.ID, ic: newImageClient(t, c, 0)}

	if s := e.settings(); s["storage"] != "" || s["storage_type"] != "local" {
		t.Fatalf("settings at bootstrap = %v; want local storage", s)
	}
	if got := e.volumeType(); got != "local" {
		t.Fatalf("volume type on local storage = %q; want local", got)
	}

	// Before the change: a local volume and a local image.
	volA := e.createVolume("a")
	if want := filepath.Join(c.Dir(0), "volumes", statedb.VolumeFileBase(volA.ID)+".qcow2"); !strings.HasSuffix(volA.Path, want) || !fileExists(t, volA.Path) {
		t.Fatalf("volume A at %q; want the local file %s", volA.Path, want)
	}
	dataX := randomBytes(1<<20, 11)
	idX := e.ic.upload(0, "x", "raw", dataX)
	if img, _ := n.State().Image(idX); img.HasHolder(statedb.ImageHolderShared) {
		t.Fatalf("image X holders = %v on local storage; want no shared holder", img.Holders)
	}
	// The leader records the hosts that keep X: a write of its own, done
	// before the checks below that nothing is written.
	c.Eventually(10*time.Second, "the hosts that keep image X recorded", func() bool {
		img, _ := n.State().Image(idX)
		return len(img.DesiredHolders) == 1
	})

	// Refused changes change nothing.
	for _, tc := range []struct{ body, msg string }{
		{`{"storage":"nfs://` + nasIP + `"}`, "want nfs://server/export"},
		{`{"storage":"nfs://` + hostIP + `/export","image_copies":5}`, "cannot reach NFS server " + hostIP},
		{`{"storage":"nfs://` + nasIP + `/nope"}`, "not writable"},
	} {
		before := n.State().Index
		st, body := e.patch(tc.body)
		if st != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body), tc.msg) {
			t.Errorf("PATCH %s = %d %v; want 400 with %q", tc.body, st, body, tc.msg)
		}
		if cfg, _ := n.State().Cluster(); cfg.Settings.Storage != "" || cfg.Settings.ImageCopies == 5 || n.State().Index != before {
			t.Errorf("PATCH %s changed the state: %+v", tc.body, cfg.Settings)
		}
	}

	// The change: storage on the share, a 4 MiB image limit.
	st, body := e.patch(`{"storage":"` + share1 + `","image_size_limit":4194304}`)
	s, _ := body["settings"].(map[string]any)
	if st != http.StatusOK || s["storage"] != share1 || s["storage_type"] != "nfs" || s["image_size_limit"] != float64(4<<20) {
		t.Fatalf("PATCH storage = %d %v; want 200 with the share and the limit", st, body)
	}
	if got := e.volumeType(); got != "nfs" {
		t.Fatalf("volume type after the change = %q; want nfs", got)
	}

	// New volumes go to the share.
	volB := e.createVolume("b")
	fileB := filepath.Join(srv.ExportDir, "ps1", statedb.VolumeFileBase(volB.ID)+".qcow2")
	if want := share1 + "/" + statedb.VolumeFileBase(volB.ID) + ".qcow2"; volB.Path != want || volB.VolumeType != "nfs" {
		t.Fatalf("volume B = %s (%s); want %s (nfs)", volB.Path, volB.VolumeType, want)
	}
	if got := virtualSize(t, fileB); got != 1<<30 {
		t.Fatalf("volume B file %s is %d bytes; want 1 GiB", fileB, got)
	}

	// Volume A still lives and works on the host's local storage.
	srvID := n.NewID()
	_, err := rest.Propose(adminContext(ctx, t, n), n, statedb.CmdCreateInstances, statedb.CreateInstancesCmd{Instances: []statedb.InstanceCreate{{
		Instance: statedb.Instance{ID: srvID, Name: "vm-settings", ProjectID: p.ID, UserID: "u", ImageID: idX,
			Flavor: statedb.Flavor{ID: "1", Name: "m1.tiny", VCPUs: 1, RAMMB: 128, DiskGB: 1}}}}})
	if err != nil {
		t.Fatalf("create server: %v", err)
	}
	c.Eventually(20*time.Second, "server active", func() bool {
		inst, ok := n.State().Instance(srvID)
		return ok && inst.VMState == "active"
	})
	if st, body := e.call("POST", "/compute/v2.1/servers/"+srvID+"/os-volume_attachments",
		`{"volumeAttachment":{"volumeId":"`+volA.ID+`"}}`); st != http.StatusOK {
		t.Fatalf("attach A = %d %v", st, body)
	}
	waitStatus(c, volA.ID, statedb.VolumeInUse)
	vm, _ := hv.VM(srvID)
	if !slices.ContainsFunc(vm.Disks, func(d agent.Disk) bool { return d.ID == volA.ID && d.Path == volA.Path }) {
		t.Fatalf("VM disks = %+v; want volume A at its local path %s", vm.Disks, volA.Path)
	}
	if st, body := e.call("DELETE", "/compute/v2.1/servers/"+srvID+"/os-volume_attachments/"+volA.ID, ""); st != http.StatusAccepted {
		t.Fatalf("detach A = %d %v", st, body)
	}
	waitStatus(c, volA.ID, statedb.VolumeAvailable)
	if st, body := e.call("POST", e.vpath("/volumes/"+volA.ID+"/action"), `{"os-extend":{"new_size":2}}`); st != http.StatusAccepted {
		t.Fatalf("extend A = %d %v", st, body)
	}
	waitVolume(c, volA.ID, "available at 2 GB", func(v *statedb.Volume, ok bool) bool {
		return ok && v.Status == statedb.VolumeAvailable && v.SizeGB == 2
	})
	if got := virtualSize(t, volA.Path); got != 2<<30 {
		t.Fatalf("volume A file is %d bytes after extend; want 2 GiB", got)
	}
	for _, v := range []*statedb.Volume{volA, volB} {
		if st, body := e.call("DELETE", e.vpath("/volumes/"+v.ID), ""); st != http.StatusAccepted {
			t.Fatalf("delete %s = %d %v", v.Name, st, body)
		}
		waitVolume(c, v.ID, "gone", func(_ *statedb.Volume, ok bool) bool { return !ok })
	}
	if fileExists(t, volA.Path) || fileExists(t, fileB) {
		t.Fatalf("volume files left: A %v, B %v", fileExists(t, volA.Path), fileExists(t, fileB))
	}

	// New images go to the share; the limit holds.
	dataY := randomBytes(2<<20+3, 12)
	idY := e.ic.upload(0, "y", "raw", dataY)
	if img, _ := n.State().Image(idY); !img.HasHolder(statedb.ImageHolderShared) {
		t.Fatalf("image Y holders = %v; want the share among them", img.Holders)
	}
	if got := fileSHA(t, filepath.Join(srv.ExportDir, "ps1", "images", sha(dataY))); got != sha(dataY) {
		t.Fatalf("image Y on the export has sha256 %s; want %s", got, sha(dataY))
	}
	stC, bodyC := e.ic.do(0, "POST", "/image/v2/images", "application/json",
		strings.NewReader(`{"name":"big","disk_format":"raw","container_format":"bare"}`))
	if stC != http.StatusCreated {
		t.Fatalf("create image = %d %s", stC, bodyC)
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(bodyC, &created); err != nil || created.ID == "" {
		t.Fatalf("create image answered %s", bodyC)
	}
	idBig := created.ID
	st413, body413 := e.ic.do(0, "PUT", "/image/v2/images/"+idBig+"/file", "application/octet-stream",
		bytes.NewReader(randomBytes(5<<20, 13)))
	if st413 != http.StatusRequestEntityTooLarge || !strings.HasPrefix(string(body413), "413 Request Entity Too Large") {
		t.Fatalf("upload over the limit = %d %q; want Glance's 413", st413, body413)
	}
	if img, ok := n.State().Image(idBig); !ok || img.Status == statedb.ImageActive {
		t.Fatalf("image over the limit = %+v; want it not active", img)
	}

	// A second change: image Y stays readable from the share it was
	// uploaded to, with this host's cached copy gone.
	if st, body := e.patch(`{"storage":"` + share2 + `"}`); st != http.StatusOK {
		t.Fatalf("PATCH storage to the second share = %d %v", st, body)
	}
	if s := e.settings(); fmt.Sprint(s["former_storage"]) != fmt.Sprint([]any{share1}) {
		t.Fatalf("former_storage = %v; want [%s]", s["former_storage"], share1)
	}
	if err := os.Remove(c.blobPath(0, sha(dataY))); err != nil {
		t.Fatal(err)
	}
	if st, got := e.ic.do(0, "GET", "/image/v2/images/"+idY+"/file", "", nil); st != http.StatusOK || !bytes.Equal(got, dataY) {
		t.Fatalf("download of image Y after the second change = %d, %d bytes; want the %d uploaded bytes", st, len(got), len(dataY))
	}
	if st, got := e.ic.do(0, "GET", "/image/v2/images/"+idX+"/file", "", nil); st != http.StatusOK || !bytes.Equal(got, dataX) {
		t.Fatalf("download of the local image X = %d, %d bytes; want the %d uploaded bytes", st, len(got), len(dataX))
	}

	// Deleting image Y removes its blob from the former share too.
	if st, body := e.ic.do(0, "DELETE", "/image/v2/images/"+idY, "", nil); st != http.StatusNoContent {
		t.Fatalf("delete image Y = %d %s", st, body)
	}
	c.Eventually(20*time.Second, "image Y and its blob on the former share gone", func() bool {
		_, ok := n.State().Image(idY)
		return !ok && !fileExists(t, filepath.Join(srv.ExportDir, "ps1", "images", sha(dataY)))
	})
}
