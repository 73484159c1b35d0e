package qemu

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// golden compares got with testdata/<name>.golden (or rewrites it with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update)", err, t.Name())
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from %s (rerun with -update if intended)\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

const testUUID = "0b5e6a6c-3f1d-4c2e-9a57-2d1f0e8c4b11"

func baseSpec() Spec {
	return Spec{
		UUID:     testUUID,
		Name:     "web-1",
		VCPUs:    1,
		RAMMB:    128,
		Arch:     ArchX86,
		RootDisk: Disk{ID: "root", Path: "/var/lib/peerstack/instances/" + testUUID + "/root.qcow2", Format: "qcow2"},
	}
}

func TestBuildArgsGolden(t *testing.T) {
	p := Paths{Dir: "/var/lib/peerstack/instances/" + testUUID}
	full := baseSpec()
	full.UUID = strings.ToUpper(full.UUID) // normalised to lower case
	full.VCPUs, full.RAMMB, full.Machine = 2, 512, "q35"
	full.ConfigDrive = p.ConfigDrive()
	full.NICs = []NIC{
		{ID: "port-a", Tap: "pst-a1b2c3d4", MAC: "FA:16:3E:00:00:01"},
		{ID: "port-b", Tap: "pst-e5f6a7b8", MAC: "fa-16-3e-00-00-02"},
	}
	full.ExtraDisks = []Disk{
		{ID: "vol1", Path: "/srv/volumes/vol1.qcow2"},
		{ID: "3f0c2a8e-9d7b-4c61-8e2f-5a4b3c2d1e0f", Path: "nfs://10.0.0.5/export/volumes/v2.raw", Format: "raw", ReadOnly: true},
	}
	eph := baseSpec()
	eph.Ephemeral = p.Ephemeral()
	eph.ConfigDrive = p.ConfigDrive()
	eph.ExtraDisks = []Disk{{ID: "vol1", Path: "/srv/volumes/vol1.qcow2"}}
	arm := baseSpec()
	arm.Arch = ArchARM64
	arm.ConfigDrive = p.ConfigDrive()
	arm.NICs = []NIC{{ID: "port-a", Tap: "pst-a1b2c3d4", MAC: "fa:16:3e:00:00:01"}}
	nfsRoot := baseSpec()
	nfsRoot.RootDisk = Disk{Path: "nfs://storage.example/export/instances/" + testUUID + "/root.qcow2"}

	for _, tc := range []struct {
		name  string
		spec  Spec
		accel Accel
	}{
		{"minimal-tcg", baseSpec(), AccelTCG},
		{"minimal-kvm", baseSpec(), AccelKVM},
		{"full-tcg", full, AccelTCG},
		{"nfs-root-tcg", nfsRoot, AccelTCG},
		{"ephemeral-tcg", eph, AccelTCG},
		{"aarch64-tcg", arm, AccelTCG},
		{"aarch64-kvm", arm, AccelKVM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, err := BuildArgs(tc.spec, p, tc.accel)
			if err != nil {
				t.Fatalf("BuildArgs(%s) = %v", tc.name, err)
			}
			golden(t, "args-"+tc.name, []byte(strings.Join(args, "\n")+"\n"))
		})
	}
}

func TestBuildArgsInvalid(t *testing.T) {
	p := Paths{Dir: "/var/lib/peerstack/instances/" + testUUID}
	nics := func(n int) []NIC {
		var out []NIC
		for i := range n {
			out = append(out, NIC{ID: fmt.Sprintf("p%d", i), Tap: fmt.Sprintf("tap%d", i), MAC: fmt.Sprintf("fa:16:3e:00:00:%02x", i+1)})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Spec)
		paths  Paths
		accel  Accel
		substr string
	}{
		{"bad uuid", func(s *Spec) { s.UUID = "not-a-uuid" }, p, AccelTCG, "uuid"},
		{"zero vcpus", func(s *Spec) { s.VCPUs = 0 }, p, AccelTCG, "vcpus"},
		{"tiny ram", func(s *Spec) { s.RAMMB = 8 }, p, AccelTCG, "ram"},
		{"bad machine", func(s *Spec) { s.Machine = "pc,accel=kvm" }, p, AccelTCG, "machine"},
		{"relative root", func(s *Spec) { s.RootDisk.Path = "root.qcow2" }, p, AccelTCG, "absolute"},
		{"bad format", func(s *Spec) { s.RootDisk.Format = "vmdk" }, p, AccelTCG, "format"},
		{"nfs port", func(s *Spec) { s.RootDisk.Path = "nfs://h:2049/export/x.qcow2" }, p, AccelTCG, "port"},
		{"nfs no export", func(s *Spec) { s.RootDisk.Path = "nfs://h/x.qcow2" }, p, AccelTCG, "export"},
		{"9 nics", func(s *Spec) { s.NICs = nics(9) }, p, AccelTCG, "9 NICs"},
		{"multicast mac", func(s *Spec) { s.NICs = []NIC{{ID: "a", Tap: "t0", MAC: "01:00:5e:00:00:01"}} }, p, AccelTCG, "multicast"},
		{"broadcast mac", func(s *Spec) { s.NICs = []NIC{{ID: "a", Tap: "t0", MAC: "ff:ff:ff:ff:ff:ff"}} }, p, AccelTCG, "multicast"},
		{"zero mac", func(s *Spec) { s.NICs = []NIC{{ID: "a", Tap: "t0", MAC: "00:00:00:00:00:00"}} }, p, AccelTCG, "zero"},
		{"8-byte mac", func(s *Spec) { s.NICs = []NIC{{ID: "a", Tap: "t0", MAC: "02:00:00:00:00:00:00:01"}} }, p, AccelTCG, "6-byte"},
		{"garbage mac", func(s *Spec) { s.NICs = []NIC{{ID: "a", Tap: "t0", MAC: "fa:16:3e:zz:00:01"}} }, p, AccelTCG, "6-byte"},
		{"dup mac", func(s *Spec) {
			s.NICs = []NIC{{ID: "a", Tap: "t0", MAC: "02:00:00:00:00:01"}, {ID: "b", Tap: "t1", MAC: "02:00:00:00:00:01"}}
		}, p, AccelTCG, "duplicate"},
		{"long tap", func(s *Spec) { s.NICs = []NIC{{ID: "a", Tap: "tap-name-too-long", MAC: "02:00:00:00:00:01"}} }, p, AccelTCG, "tap"},
		{"comma tap", func(s *Spec) { s.NICs = []NIC{{ID: "a", Tap: "t0,x=y", MAC: "02:00:00:00:00:01"}} }, p, AccelTCG, "tap"},
		{"relative ephemeral", func(s *Spec) { s.Ephemeral = "ephemeral.qcow2" }, p, AccelTCG, "ephemeral"},
		{"unknown arch", func(s *Spec) { s.Arch = "riscv64" }, p, AccelTCG, "arch"},
		{"x86 firmware", func(s *Spec) { s.Firmware = "/usr/share/ovmf/OVMF.fd" }, p, AccelTCG, "firmware"},
		{"relative aarch64 firmware", func(s *Spec) { s.Arch, s.Firmware = ArchARM64, "QEMU_EFI.fd" }, p, AccelTCG, "firmware"},
		{"bad disk id", func(s *Spec) { s.ExtraDisks = []Disk{{ID: "a,b", Path: "/x"}} }, p, AccelTCG, "id"},
		{"dup disk id", func(s *Spec) { s.ExtraDisks = []Disk{{ID: "a", Path: "/x"}, {ID: "a", Path: "/y"}} }, p, AccelTCG, "duplicate"},
		{"relative dir", func(s *Spec) {}, Paths{Dir: "vms/x"}, AccelTCG, "absolute"},
		{"comma dir", func(s *Spec) {}, Paths{Dir: "/var/lib/a,b"}, AccelTCG, "comma"},
		{"bad accel", func(s *Spec) {}, p, Accel("hvf"), "accelerator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSpec()
			tc.mutate(&s)
			args, err := BuildArgs(s, tc.paths, tc.accel)
			if err == nil {
				t.Fatalf("BuildArgs = %q, nil; want error containing %q", args, tc.substr)
			}
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.substr) {
				t.Errorf("BuildArgs error = %v; want ErrInvalidSpec containing %q", err, tc.substr)
			}
		})
	}
}

func TestBuildArgsMaxNICs(t *testing.T) {
	s := baseSpec()
	for i := range MaxNICs {
		s.NICs = append(s.NICs, NIC{ID: fmt.Sprintf("p%d", i), Tap: fmt.Sprintf("tap%d", i), MAC: fmt.Sprintf("02:00:00:00:00:%02x", i+1)})
	}
	args, err := BuildArgs(s, Paths{Dir: "/v/" + testUUID}, AccelTCG)
	if err != nil {
		t.Fatalf("BuildArgs(8 NICs) = %v", err)
	}
	if n := strings.Count(strings.Join(args, " "), "virtio-net-pci"); n != MaxNICs {
		t.Errorf("virtio-net-pci count = %d; want %d", n, MaxNICs)
	}
}

func TestParseNFS(t *testing.T) {
	for _, tc := range []struct {
		in       string
		host     string
		path     string
		wantFail bool
	}{
		{in: "nfs://10.0.0.5/export/vol.qcow2", host: "10.0.0.5", path: "/export/vol.qcow2"},
		{in: "nfs://nas/export/a/b/../c.raw", host: "nas", path: "/export/a/c.raw"},
		{in: "nfs://[fd00::5]/export/v", host: "fd00::5", path: "/export/v"},
		{in: "nfs:///export/v", wantFail: true},
		{in: "nfs://h/v", wantFail: true},
		{in: "nfs://h:111/export/v", wantFail: true},
		{in: "nfs://h/export/v?version=4", wantFail: true},
		{in: "http://h/export/v", wantFail: true},
	} {
		got, err := parseNFS(tc.in)
		if tc.wantFail {
			if err == nil {
				t.Errorf("parseNFS(%q) = %+v, nil; want error", tc.in, got)
			}
			continue
		}
		if err != nil || got.Host != tc.host || got.Path != tc.path {
			t.Errorf("parseNFS(%q) = %+v, %v; want {%s %s}", tc.in, got, err, tc.host, tc.path)
		}
	}
}

func TestVolumeNodeName(t *testing.T) {
	for _, id := range []string{"v", "vol1", "3f0c2a8e-9d7b-4c61-8e2f-5a4b3c2d1e0f", strings.Repeat("x", 64)} {
		n := volumeNodeName(id)
		if len(n) > 31 || !strings.HasPrefix(n, "vol-") {
			t.Errorf("volumeNodeName(%q) = %q; want vol-… of at most 31 bytes", id, n)
		}
		if n2 := volumeNodeName(id); n2 != n {
			t.Errorf("volumeNodeName(%q) not stable: %q, %q", id, n, n2)
		}
	}
	a := volumeNodeName("3f0c2a8e-9d7b-4c61-8e2f-5a4b3c2d1e0f")
	b := volumeNodeName("3f0c2a8e-9d7b-4c61-8e2f-5a4b3c2d1e0e")
	if a == b {
		t.Errorf("volumeNodeName collides for ids differing in the last byte: %q", a)
	}
}

func TestValidateMAC(t *testing.T) {
	got, err := ValidateMAC("FA:16:3E:0A:0B:0C")
	if err != nil || got != "fa:16:3e:0a:0b:0c" {
		t.Errorf("ValidateMAC = %q, %v; want fa:16:3e:0a:0b:0c", got, err)
	}
}

func TestQMPSocketPath(t *testing.T) {
	short := Paths{Dir: "/var/lib/peerstack/instances/" + testUUID}
	if got, want := short.QMPSocket(), short.Dir+"/qmp.sock"; got != want {
		t.Errorf("QMPSocket(%s) = %s; want %s", short.Dir, got, want)
	}
	deep := Paths{Dir: "/home/someone/src/github.com/peerstack/peerstack/data/instances/" + testUUID}
	other := Paths{Dir: "/home/someone/src/github.com/peerstack/peerstack/data2/instances/" + testUUID}
	got := deep.QMPSocket()
	if len(got) > maxSocketPath || filepath.Dir(got) != ShortSocketDir {
		t.Errorf("QMPSocket(%s) = %s (%d bytes); want a path in %s of at most %d bytes", deep.Dir, got, len(got), ShortSocketDir, maxSocketPath)
	}
	if again := (Paths{Dir: deep.Dir + "/"}).QMPSocket(); again != got {
		t.Errorf("QMPSocket is not stable: %s then %s", got, again)
	}
	if o := other.QMPSocket(); o == got {
		t.Errorf("two VM dirs share the QMP socket %s", o)
	}
	args, err := BuildArgs(baseSpec(), deep, AccelTCG)
	if err != nil {
		t.Fatalf("BuildArgs with a deep dir = %v", err)
	}
	if !slices.Contains(args, "unix:"+got+",server=on,wait=off") {
		t.Errorf("BuildArgs with a deep dir does not use %s: %v", got, args)
	}
}
