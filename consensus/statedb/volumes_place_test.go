package statedb

import (
	"errors"
	"strings"
	"testing"
)

// TestVolumePlacement: a volume on local storage is created without a host
// or path, placed by PlaceVolumeCmd under the placement rule, and takes
// the path its host's agent reports.
func TestVolumePlacement(t *testing.T) {
	e := newVolEnv(t, "")
	big := HostCap{VCPUs: 8, RAMMB: 8192, DiskGB: 10}
	e.must(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v1", ProjectID: "p1", SizeGB: 6, Format: "qcow2", VolumeType: VolumeTypeLocal}})
	e.must(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v2", ProjectID: "p1", SizeGB: 6, Format: "qcow2", VolumeType: VolumeTypeLocal}})
	if got := e.s.Snapshot().UnplacedVolumes(); len(got) != 2 || got[0].ID != "v1" || got[1].ID != "v2" {
		t.Fatalf("unplaced = %v; want v1, v2", got)
	}
	// A host's agent ignores an unplaced volume's reports.
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable, Path: "/v/x"})
	e.report(ReportVolumeCmd{VolumeID: "v1", Status: VolumeAvailable, Path: "/v/x"})
	e.wantStatus("v1", VolumeCreating)

	e.must(CmdPlaceVolume, PlaceVolumeCmd{VolumeID: "v1", HostID: "host1", HostCap: big})
	if v := e.vol("v1"); v.Host != "host1" || v.Path != "" || v.Status != VolumeCreating {
		t.Fatalf("placed volume = %+v; want creating on host1 without a path", v)
	}
	// A repeated or stale choice changes nothing.
	e.must(CmdPlaceVolume, PlaceVolumeCmd{VolumeID: "v1", HostID: "host2", HostCap: big})
	if v := e.vol("v1"); v.Host != "host1" {
		t.Fatalf("volume moved to %s by a stale choice", v.Host)
	}
	// v2 does not fit beside v1 on host1 (10 GB disk), nor beside an
	// instance's claim on host2; it does under a disk ratio of 2.
	e.putInstance(Instance{ID: "s1", ProjectID: "p1", Host: "host2", Flavor: Flavor{VCPUs: 1, RAMMB: 1, DiskGB: 5}})
	e.must(CmdPlaceVolume, PlaceVolumeCmd{VolumeID: "v2", HostID: "host1", HostCap: big})
	e.must(CmdPlaceVolume, PlaceVolumeCmd{VolumeID: "v2", HostID: "host2", HostCap: big})
	e.must(CmdPlaceVolume, PlaceVolumeCmd{VolumeID: "v2", HostID: "nohost", HostCap: big})
	if v := e.vol("v2"); v.Host != "" {
		t.Fatalf("v2 placed on %s; want unplaced", v.Host)
	}
	e.must(CmdSetHostEnabled, SetHostEnabledCmd{ID: "host1", Disabled: true})
	e.must(CmdPlaceVolume, PlaceVolumeCmd{VolumeID: "v2", HostID: "host1", HostCap: big, Ratios: Ratios{Disk: 2}})
	if v := e.vol("v2"); v.Host != "" {
		t.Fatalf("v2 placed on disabled %s", v.Host)
	}
	e.must(CmdSetHostEnabled, SetHostEnabledCmd{ID: "host1"})
	e.must(CmdPlaceVolume, PlaceVolumeCmd{VolumeID: "v2", HostID: "host1", HostCap: big, Ratios: Ratios{Disk: 2}})
	if v := e.vol("v2"); v.Host != "host1" {
		t.Fatalf("v2 on %q; want host1 under disk ratio 2", v.Host)
	}

	// Only the placed host reports; it says where the file is.
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", Status: VolumeAvailable, Path: "/elsewhere"})
	e.wantStatus("v1", VolumeCreating)
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable, Path: "/v/vol-v1.qcow2"})
	if v := e.wantStatus("v1", VolumeAvailable); v.Path != "/v/vol-v1.qcow2" {
		t.Fatalf("path = %q; want the reported one", v.Path)
	}
	// A report without the path is an error, never a volume nobody can find.
	e.report(ReportVolumeCmd{VolumeID: "v2", HostID: "host1", Status: VolumeAvailable})
	if v := e.wantStatus("v2", VolumeError); !strings.Contains(v.ErrorReason, "did not say where") {
		t.Fatalf("reason = %q", v.ErrorReason)
	}

	// No host: the leader's failure puts the volume in error with the reason.
	e.must(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v3", ProjectID: "p1", SizeGB: 1, Format: "qcow2", VolumeType: VolumeTypeLocal}})
	e.must(CmdPlaceVolume, PlaceVolumeCmd{VolumeID: "v3", Failure: NoValidHost})
	if v := e.wantStatus("v3", VolumeError); v.ErrorReason != NoValidHost || v.Host != "" {
		t.Fatalf("v3 = %+v; want error, No valid host", v)
	}
	// Deleting it removes the record at once: no host has a file to remove.
	e.must(CmdDeleteVolume, DeleteVolumeCmd{ID: "v3"})
	if _, ok := e.s.Snapshot().Volume("v3"); ok {
		t.Fatal("an unplaced volume in error is still there after delete")
	}
}

// TestVolumeCreateNeedsHostOnSharedStorage: only local storage defers the
// host to placement.
func TestVolumeCreateNeedsHostOnSharedStorage(t *testing.T) {
	e := newVolEnv(t, "nfs://srv/export")
	err := e.apply(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v1", ProjectID: "p1", SizeGB: 1, Format: "qcow2"}})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("create on shared storage without a host = %v; want invalid", err)
	}
	e2 := newVolEnv(t, "")
	err = e2.apply(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v1", ProjectID: "p1", SizeGB: 1, Format: "qcow2", Path: "/v/x"}})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("create with a path but no host = %v; want invalid", err)
	}
}
