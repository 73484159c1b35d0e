package statedb

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// volEnv is a store with a bootstrapped cluster (host1, host2) and a
// counter for Raft indexes and request ids.
type volEnv struct {
	t   *testing.T
	s   *Store
	idx uint64
}

func newVolEnv(t *testing.T, storage string) *volEnv {
	t.Helper()
	e := &volEnv{t: t, s: NewStore()}
	e.must(CmdBootstrap, BootstrapCmd{
		Config:     ClusterConfig{ClusterID: "c", Settings: Settings{Storage: storage}},
		Member:     Member{ID: "host1", Name: "h1"},
		Project:    Project{ID: "p1", Name: "admin"},
		Admin:      User{ID: "u1", Name: "admin"},
		Assignment: Assignment{ProjectID: "p1", UserID: "u1", RoleID: "r1"},
		SigningKey: SigningKey{ID: "k1"},
	})
	e.must(CmdRegisterMember, Member{ID: "host2", Name: "h2"})
	return e
}

func (e *volEnv) apply(typ CmdType, payload any) error {
	e.t.Helper()
	e.idx++
	return apply(e.t, e.s, e.idx, typ, fmt.Sprintf("req-%d", e.idx), payload).Err
}

func (e *volEnv) must(typ CmdType, payload any) {
	e.t.Helper()
	if err := e.apply(typ, payload); err != nil {
		e.t.Fatalf("apply %d %+v: %v", typ, payload, err)
	}
}

// putInstance inserts an instance directly (the compute commands are
// another resource's).
func (e *volEnv) putInstance(inst Instance) {
	e.t.Helper()
	txn := e.s.db.Txn(true)
	if err := txn.Insert(tblInstances, &inst); err != nil {
		e.t.Fatal(err)
	}
	txn.Commit()
}

func (e *volEnv) dropInstance(id string) {
	e.t.Helper()
	inst, ok := e.s.Snapshot().Instance(id)
	if !ok {
		e.t.Fatalf("no instance %s", id)
	}
	txn := e.s.db.Txn(true)
	if err := txn.Delete(tblInstances, inst); err != nil {
		e.t.Fatal(err)
	}
	txn.Commit()
}

func (e *volEnv) vol(id string) *Volume {
	e.t.Helper()
	v, ok := e.s.Snapshot().Volume(id)
	if !ok {
		e.t.Fatalf("volume %s not found", id)
	}
	return v
}

func (e *volEnv) create(id, host string) {
	e.t.Helper()
	// The path follows the storage setting, as the API host's store makes it.
	path, vtype := "/v/"+id, VolumeTypeLocal
	if cfg, ok := e.s.Snapshot().Cluster(); ok && VolumeBackendType(cfg.Settings.Storage) == VolumeTypeNFS {
		path, vtype = cfg.Settings.Storage+"/"+id+".qcow2", VolumeTypeNFS
	}
	e.must(CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: id, Name: id, ProjectID: "p1", SizeGB: 1,
		Format: "qcow2", Host: host, VolumeType: vtype, Path: path}})
}

func (e *volEnv) report(r ReportVolumeCmd) {
	e.t.Helper()
	e.must(CmdReportVolume, r)
}

func (e *volEnv) wantStatus(id, status string) *Volume {
	e.t.Helper()
	v := e.vol(id)
	if v.Status != status {
		e.t.Fatalf("volume %s status = %q (reason %q); want %q", id, v.Status, v.ErrorReason, status)
	}
	return v
}

func activeServer(id, host string) Instance {
	return Instance{ID: id, ProjectID: "p1", Host: host, VMState: "active", Desired: "running"}
}

func TestVolumeLifecycle(t *testing.T) {
	e := newVolEnv(t, "nfs://srv/export")
	e.putInstance(activeServer("s1", "host2"))
	e.create("v1", "host1")
	v := e.wantStatus("v1", VolumeCreating)
	if v.Metadata == nil || v.Attachments == nil || v.CreatedAt.IsZero() {
		t.Fatalf("created volume = %+v; want metadata, attachments and created_at set", v)
	}
	// Only the volume's host reports on the file.
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", Status: VolumeAvailable})
	e.wantStatus("v1", VolumeCreating)
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.wantStatus("v1", VolumeAvailable)

	// Attach (shared storage: any host) → attaching until the server's host reports.
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s1", AttachmentID: "a1"})
	v = e.wantStatus("v1", VolumeAttaching)
	a := v.Attachment()
	if a == nil || a.HostID != "host2" || a.State != AttachAttaching || a.Device != "/dev/vdb" {
		t.Fatalf("attachment = %+v; want attaching on host2 as /dev/vdb", a)
	}
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", AttachmentID: "a1", AttachmentState: AttachAttached})
	e.wantStatus("v1", VolumeAttaching)
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "wrong", AttachmentState: AttachAttached})
	e.wantStatus("v1", VolumeAttaching)
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a1", AttachmentState: AttachAttached, Device: "/dev/vdc"})
	v = e.wantStatus("v1", VolumeInUse)
	if a := v.Attachment(); a.State != AttachAttached || a.Device != "/dev/vdc" || a.AttachedAt.IsZero() {
		t.Fatalf("attachment = %+v; want attached as /dev/vdc with a time", a)
	}

	// In use: delete refused.
	if err := e.apply(CmdDeleteVolume, DeleteVolumeCmd{ID: "v1"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("delete in-use: err = %v; want invalid", err)
	}

	// Online extend: the attachment's host does it.
	e.must(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 3})
	v = e.wantStatus("v1", VolumeExtending)
	if v.SizeGB != 3 || v.PrevSizeGB != 1 {
		t.Fatalf("extending size = %d prev %d; want 3 prev 1", v.SizeGB, v.PrevSizeGB)
	}
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.wantStatus("v1", VolumeExtending)
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", Status: VolumeAvailable})
	if v = e.wantStatus("v1", VolumeInUse); v.SizeGB != 3 || v.PrevSizeGB != 0 {
		t.Fatalf("after online extend size = %d prev %d; want 3, 0", v.SizeGB, v.PrevSizeGB)
	}

	// Detach, and the host reports the device gone: available.
	e.must(CmdDetachVolume, DetachVolumeCmd{VolumeID: "v1", ServerID: "s1"})
	e.wantStatus("v1", VolumeDetaching)
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a1", AttachmentState: AttachDetached})
	if v = e.wantStatus("v1", VolumeAvailable); len(v.Attachments) != 0 {
		t.Fatalf("after detach attachments = %+v; want none", v.Attachments)
	}

	// Offline extend, then delete.
	e.must(CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 4})
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.wantStatus("v1", VolumeAvailable)
	e.must(CmdDeleteVolume, DeleteVolumeCmd{ID: "v1"})
	e.wantStatus("v1", VolumeDeleting)
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", Status: VolumeDeleted})
	e.wantStatus("v1", VolumeDeleting)
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeDeleted})
	if _, ok := e.s.Snapshot().Volume("v1"); ok {
		t.Fatal("volume still there after the deleted report")
	}
	// A late report about a gone volume is not an error.
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
}

// TestVolumeDetachGiveUp: a detach ends available, or in-use with the
// reason when the host gives up; a detach is accepted again at any point
// while the volume is attached, and nothing stays detaching.
func TestVolumeDetachGiveUp(t *testing.T) {
	e := newVolEnv(t, "nfs://srv/export")
	e.putInstance(activeServer("s1", "host2"))
	e.create("v1", "host1")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s1", AttachmentID: "a1"})
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a1", AttachmentState: AttachAttached})
	attachedAt := e.wantStatus("v1", VolumeInUse).Attachment().AttachedAt

	e.must(CmdDetachVolume, DetachVolumeCmd{VolumeID: "v1", ServerID: "s1"})
	e.wantStatus("v1", VolumeDetaching)
	// Repeated while detaching: accepted, still detaching.
	e.must(CmdDetachVolume, DetachVolumeCmd{VolumeID: "v1", ServerID: "s1"})
	e.wantStatus("v1", VolumeDetaching)
	// A give-up from another host, or about another attachment, is ignored.
	giveUp := ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a1", AttachmentState: AttachAttached,
		Error: "guest did not release the device"}
	other := giveUp
	other.HostID = "host1"
	e.report(other)
	other = giveUp
	other.AttachmentID = "a0"
	e.report(other)
	e.wantStatus("v1", VolumeDetaching)

	// The host gives up: in-use again, attached, with the reason.
	e.report(giveUp)
	v := e.wantStatus("v1", VolumeInUse)
	a := v.Attachment()
	if a == nil || a.State != AttachAttached || a.ID != "a1" || a.Device != "/dev/vdb" || !a.AttachedAt.Equal(attachedAt) {
		t.Fatalf("attachment after a give-up = %+v; want a1 attached as before", a)
	}
	if want := "detaching from server s1 failed: guest did not release the device"; v.ErrorReason != want {
		t.Fatalf("reason after a give-up = %q; want %q", v.ErrorReason, want)
	}
	// A late duplicate give-up changes nothing.
	e.report(giveUp)
	e.wantStatus("v1", VolumeInUse)

	// The user asks again: accepted, the reason cleared; this time it works.
	e.must(CmdDetachVolume, DetachVolumeCmd{VolumeID: "v1", ServerID: "s1"})
	if v = e.wantStatus("v1", VolumeDetaching); v.ErrorReason != "" {
		t.Fatalf("repeated detach kept reason %q", v.ErrorReason)
	}
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a1", AttachmentState: AttachDetached})
	if v = e.wantStatus("v1", VolumeAvailable); len(v.Attachments) != 0 || v.ErrorReason != "" {
		t.Fatalf("after detach = %+v; want available without attachments or reason", v)
	}
	// A late give-up after the detach went through is ignored.
	e.report(giveUp)
	e.wantStatus("v1", VolumeAvailable)
	// Detached: a further detach is not found (Nova answers 404).
	if err := e.apply(CmdDetachVolume, DetachVolumeCmd{VolumeID: "v1", ServerID: "s1"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("detach of a detached volume: err = %v; want not found", err)
	}

	// An older agent's report (the error alone) keeps the volume detaching
	// with the reason, as it always did on replay; a new detach clears it.
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s1", AttachmentID: "a2"})
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a2", AttachmentState: AttachAttached})
	e.must(CmdDetachVolume, DetachVolumeCmd{VolumeID: "v1", ServerID: "s1"})
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a2", Error: "guest did not release the device"})
	if v = e.wantStatus("v1", VolumeDetaching); v.ErrorReason != "guest did not release the device" {
		t.Fatalf("after an old-style failure report = %+v; want detaching with the reason", v)
	}
	e.must(CmdDetachVolume, DetachVolumeCmd{VolumeID: "v1", ServerID: "s1"})
	if v = e.wantStatus("v1", VolumeDetaching); v.ErrorReason != "" {
		t.Fatalf("repeated detach kept reason %q", v.ErrorReason)
	}
	// The server goes away meanwhile: any report drops the attachment.
	e.dropInstance("s1")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a2", AttachmentState: AttachAttached, Error: "vm not found"})
	if v = e.wantStatus("v1", VolumeAvailable); len(v.Attachments) != 0 {
		t.Fatalf("give-up for a gone server = %+v; want available without attachments", v)
	}
}

func TestVolumeErrors(t *testing.T) {
	e := newVolEnv(t, "")
	e.create("v1", "host1")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeError, Error: "qemu-img: disk full"})
	if v := e.wantStatus("v1", VolumeError); v.ErrorReason != "qemu-img: disk full" {
		t.Fatalf("reason = %q", v.ErrorReason)
	}
	// error → available is not a transition a report can make.
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.wantStatus("v1", VolumeError)
	// Deleting an errored volume works; a failed delete is error_deleting, and can be retried.
	e.must(CmdDeleteVolume, DeleteVolumeCmd{ID: "v1"})
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeErrorDeleting, Error: "permission denied"})
	e.wantStatus("v1", VolumeErrorDeleting)
	e.must(CmdDeleteVolume, DeleteVolumeCmd{ID: "v1"})
	e.wantStatus("v1", VolumeDeleting)

	// A failed offline extend restores the size.
	e.create("v2", "host1")
	e.report(ReportVolumeCmd{VolumeID: "v2", HostID: "host1", Status: VolumeAvailable})
	e.must(CmdExtendVolume, ExtendVolumeCmd{ID: "v2", NewSizeGB: 5})
	e.report(ReportVolumeCmd{VolumeID: "v2", HostID: "host1", Error: "no space"})
	if v := e.wantStatus("v2", VolumeErrorExtending); v.SizeGB != 1 || v.ErrorReason != "no space" {
		t.Fatalf("after failed extend = %+v; want size 1 with the reason", v)
	}
}

func TestVolumeCommandChecks(t *testing.T) {
	e := newVolEnv(t, "")
	e.putInstance(activeServer("s1", "host1"))
	e.create("v1", "host1")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
	e.create("v2", "host1") // stays creating
	tests := []struct {
		name string
		typ  CmdType
		cmd  any
		want error
	}{
		{"create zero size", CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "x", ProjectID: "p1", Host: "host1", Format: "qcow2"}}, ErrInvalid},
		{"create bad format", CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "x", ProjectID: "p1", Host: "host1", SizeGB: 1, Format: "vmdk"}}, ErrInvalid},
		{"create unknown host", CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "x", ProjectID: "p1", Host: "nohost", SizeGB: 1, Format: "raw"}}, ErrInvalid},
		{"create duplicate id", CmdCreateVolume, CreateVolumeCmd{Volume: Volume{ID: "v1", ProjectID: "p1", Host: "host1", SizeGB: 1, Format: "raw"}}, ErrConflict},
		{"update missing", CmdUpdateVolume, UpdateVolumeCmd{ID: "nope"}, ErrNotFound},
		{"delete creating", CmdDeleteVolume, DeleteVolumeCmd{ID: "v2"}, ErrInvalid},
		{"delete missing", CmdDeleteVolume, DeleteVolumeCmd{ID: "nope"}, ErrNotFound},
		{"shrink", CmdExtendVolume, ExtendVolumeCmd{ID: "v1", NewSizeGB: 1}, ErrInvalid},
		{"extend creating", CmdExtendVolume, ExtendVolumeCmd{ID: "v2", NewSizeGB: 2}, ErrInvalid},
		{"attach creating", CmdAttachVolume, AttachVolumeCmd{VolumeID: "v2", ServerID: "s1", AttachmentID: "a"}, ErrInvalid},
		{"attach missing server", CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "nope", AttachmentID: "a"}, ErrNotFound},
		{"attach missing volume", CmdAttachVolume, AttachVolumeCmd{VolumeID: "nope", ServerID: "s1", AttachmentID: "a"}, ErrNotFound},
		{"attach without attachment id", CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s1"}, ErrInvalid},
		{"detach not attached", CmdDetachVolume, DetachVolumeCmd{VolumeID: "v1", ServerID: "s1"}, ErrNotFound},
		{"reset bad status", CmdResetVolumeStatus, ResetVolumeStatusCmd{ID: "v1", Status: "bogus"}, ErrInvalid},
		{"release without an attachment", CmdReleaseVolume, ReleaseVolumeCmd{VolumeID: "v1", AttachmentID: "a9"}, nil},
		{"host gone while member", CmdVolumeHostGone, VolumeHostGoneCmd{HostID: "host1"}, ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.s.Snapshot().Volumes()
			err := e.apply(tt.typ, tt.cmd)
			if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("apply(%d, %+v) = %v; want %v", tt.typ, tt.cmd, err, tt.want)
			}
			if tt.want != nil {
				after := e.s.Snapshot().Volumes()
				if fmt.Sprint(before) != fmt.Sprint(after) {
					t.Fatalf("failed command changed the volumes: %v → %v", before, after)
				}
			}
		})
	}
}

func TestVolumeAttachRules(t *testing.T) {
	tests := []struct {
		name    string
		storage string
		server  Instance
		want    error
	}{
		{"local same host", "", activeServer("s", "host1"), nil},
		{"local other host", "", activeServer("s", "host2"), ErrInvalid},
		{"nfs other host", "nfs://srv/export", activeServer("s", "host2"), nil},
		{"stopped server", "", Instance{ID: "s", ProjectID: "p1", Host: "host1", VMState: "stopped", Desired: "stopped"}, nil},
		{"unplaced server", "nfs://srv/export", Instance{ID: "s", ProjectID: "p1", VMState: "building", Desired: "running"}, ErrConflict},
		{"building server", "", Instance{ID: "s", ProjectID: "p1", Host: "host1", VMState: "building", Desired: "running"}, ErrConflict},
		{"error server", "", Instance{ID: "s", ProjectID: "p1", Host: "host1", VMState: "error", Desired: "running"}, ErrConflict},
		{"deleting server", "", Instance{ID: "s", ProjectID: "p1", Host: "host1", VMState: "active", Desired: "deleted"}, ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newVolEnv(t, tt.storage)
			e.putInstance(tt.server)
			e.create("v1", "host1")
			e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})
			err := e.apply(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s", AttachmentID: "a1"})
			if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Attach(%s) = %v; want %v", tt.name, err, tt.want)
			}
			if tt.want == nil {
				if a := e.wantStatus("v1", VolumeAttaching).Attachment(); a.HostID != tt.server.Host {
					t.Fatalf("attachment host = %s; want the server's host %s", a.HostID, tt.server.Host)
				}
			} else {
				e.wantStatus("v1", VolumeAvailable)
			}
			if tt.name == "local other host" {
				var se *Error
				if !errors.As(err, &se) || !strings.Contains(se.Msg, "local storage") || !strings.Contains(se.Msg, "h1") || !strings.Contains(se.Msg, "h2") {
					t.Fatalf("local storage message = %q; want it to name the rule and both hosts", err)
				}
			}
		})
	}
}

func TestVolumeAttachExclusive(t *testing.T) {
	e := newVolEnv(t, "nfs://srv/export")
	e.putInstance(activeServer("s1", "host1"))
	e.putInstance(activeServer("s2", "host2"))
	for _, id := range []string{"v1", "v2", "v3"} {
		e.create(id, "host1")
		e.report(ReportVolumeCmd{VolumeID: id, HostID: "host1", Status: VolumeAvailable})
	}
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s1", AttachmentID: "a1"})
	for _, tt := range []struct{ server, att string }{{"s2", "a2"}, {"s1", "a3"}} {
		err := e.apply(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: tt.server, AttachmentID: tt.att})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("second attach of v1 to %s = %v; want invalid", tt.server, err)
		}
	}
	if a := e.vol("v1").Attachment(); a.ID != "a1" || a.ServerID != "s1" {
		t.Fatalf("attachment = %+v; want the first one kept", a)
	}
	// Devices: the next volume on s1 gets the next free name; a free hint is kept.
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v2", ServerID: "s1", AttachmentID: "a4", Device: "/dev/vdb"})
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v3", ServerID: "s1", AttachmentID: "a5", Device: "/dev/vdf"})
	for id, want := range map[string]string{"v1": "/dev/vdb", "v2": "/dev/vdc", "v3": "/dev/vdf"} {
		if got := e.vol(id).Attachment().Device; got != want {
			t.Errorf("device of %s = %s; want %s", id, got, want)
		}
	}
}

func TestVolumeAttachFailsAndServerGone(t *testing.T) {
	e := newVolEnv(t, "nfs://srv/export")
	e.putInstance(activeServer("s1", "host2"))
	e.create("v1", "host1")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host1", Status: VolumeAvailable})

	// The agent cannot attach: back to available with the reason.
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s1", AttachmentID: "a1"})
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a1", Error: "device_add failed"})
	if v := e.wantStatus("v1", VolumeAvailable); len(v.Attachments) != 0 || !strings.Contains(v.ErrorReason, "device_add failed") {
		t.Fatalf("after failed attach = %+v", v)
	}

	// Attached, then the server vanishes: release refuses while it exists, then drops it.
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s1", AttachmentID: "a2"})
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a2", AttachmentState: AttachAttached})
	if err := e.apply(CmdReleaseVolume, ReleaseVolumeCmd{VolumeID: "v1", AttachmentID: "a2"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("release with server present = %v; want conflict", err)
	}
	e.dropInstance("s1")
	e.must(CmdReleaseVolume, ReleaseVolumeCmd{VolumeID: "v1", AttachmentID: "a2"})
	if v := e.wantStatus("v1", VolumeAvailable); len(v.Attachments) != 0 {
		t.Fatalf("released volume still attached: %+v", v.Attachments)
	}

	// A late attach report for a vanished server drops the attachment.
	e.putInstance(activeServer("s2", "host2"))
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v1", ServerID: "s2", AttachmentID: "a3"})
	e.dropInstance("s2")
	e.report(ReportVolumeCmd{VolumeID: "v1", HostID: "host2", AttachmentID: "a3", AttachmentState: AttachAttached})
	if v := e.wantStatus("v1", VolumeAvailable); len(v.Attachments) != 0 {
		t.Fatalf("attachment to a vanished server kept: %+v", v.Attachments)
	}
}

func TestVolumeHostGone(t *testing.T) {
	for _, storage := range []string{"", "nfs://srv/export"} {
		t.Run(VolumeBackendType(storage), func(t *testing.T) {
			e := newVolEnv(t, storage)
			e.create("ready", "host2")
			e.report(ReportVolumeCmd{VolumeID: "ready", HostID: "host2", Status: VolumeAvailable})
			e.create("new", "host2")
			e.create("dying", "host2")
			e.report(ReportVolumeCmd{VolumeID: "dying", HostID: "host2", Status: VolumeAvailable})
			e.must(CmdDeleteVolume, DeleteVolumeCmd{ID: "dying"})
			e.must(CmdRemoveMember, RemoveMemberCmd{ID: "host2"})
			e.must(CmdVolumeHostGone, VolumeHostGoneCmd{HostID: "host2", NewHostID: "host1"})
			sn := e.s.Snapshot()
			if storage == "" {
				if _, ok := sn.Volume("dying"); ok {
					t.Error("deleting volume on a gone local host kept")
				}
				for _, id := range []string{"ready", "new"} {
					if v := e.wantStatus(id, VolumeError); !strings.Contains(v.ErrorReason, "left the cluster") {
						t.Errorf("%s reason = %q", id, v.ErrorReason)
					}
				}
				return
			}
			if v := e.wantStatus("ready", VolumeAvailable); v.Host != "host1" {
				t.Errorf("ready host = %s; want host1", v.Host)
			}
			if v := e.wantStatus("dying", VolumeDeleting); v.Host != "host1" {
				t.Errorf("dying host = %s; want host1", v.Host)
			}
			e.wantStatus("new", VolumeError)
		})
	}
}

func TestVolumeUpdateAndReset(t *testing.T) {
	e := newVolEnv(t, "")
	e.create("v1", "host1")
	name, desc := "renamed", "d"
	md := map[string]string{"k": "v"}
	e.must(CmdUpdateVolume, UpdateVolumeCmd{ID: "v1", Name: &name, Description: &desc, Metadata: &md})
	md["k"] = "changed after apply"
	v := e.vol("v1")
	if v.Name != "renamed" || v.Description != "d" || v.Metadata["k"] != "v" {
		t.Fatalf("updated = %+v", v)
	}
	e.must(CmdUpdateVolume, UpdateVolumeCmd{ID: "v1"})
	if v := e.vol("v1"); v.Name != "renamed" || len(v.Metadata) != 1 {
		t.Fatalf("empty update changed the volume: %+v", v)
	}
	// Admin reset of a stuck volume.
	e.must(CmdResetVolumeStatus, ResetVolumeStatusCmd{ID: "v1", Status: VolumeAvailable})
	e.wantStatus("v1", VolumeAvailable)
}

func TestVolumeBackendType(t *testing.T) {
	for in, want := range map[string]string{"": "local", "nfs://a/b": "nfs", "/srv/x": "local"} {
		if got := VolumeBackendType(in); got != want {
			t.Errorf("VolumeBackendType(%q) = %q; want %q", in, got, want)
		}
	}
}

// An attach with a tag and delete_on_termination keeps both; the volume
// then goes with its server. The same fields in a plain AttachVolume entry
// are ignored, so that entry applies alike on hosts that do not know them.
func TestVolumeAttachTaggedDeleteOnTermination(t *testing.T) {
	e := newVolEnv(t, "nfs://srv/export")
	e.putInstance(activeServer("s1", "host2"))
	for _, id := range []string{"v1", "v2"} {
		e.create(id, "host1")
		e.report(ReportVolumeCmd{VolumeID: id, HostID: "host1", Status: VolumeAvailable})
	}
	if err := e.apply(CmdAttachVolumeTagged, AttachVolumeCmd{VolumeID: "v1", ServerID: "s1", AttachmentID: "a1", Tag: "bad/tag"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("tag with a slash = %v; want invalid", err)
	}
	e.must(CmdAttachVolumeTagged, AttachVolumeCmd{VolumeID: "v1", ServerID: "s1", AttachmentID: "a1", Tag: "data", DeleteOnTermination: true})
	e.must(CmdAttachVolume, AttachVolumeCmd{VolumeID: "v2", ServerID: "s1", AttachmentID: "a2", Tag: "ignored", DeleteOnTermination: true})
	if a := e.vol("v1").Attachment(); a.Tag != "data" || !a.DeleteOnTermination {
		t.Fatalf("tagged attachment = %+v; want tag data, delete on termination", a)
	}
	if a := e.vol("v2").Attachment(); a.Tag != "" || a.DeleteOnTermination {
		t.Fatalf("plain attach took the new fields: %+v", a)
	}
	for _, id := range []string{"v1", "v2"} {
		a := e.vol(id).Attachment()
		e.report(ReportVolumeCmd{VolumeID: id, HostID: "host2", AttachmentID: a.ID, AttachmentState: AttachAttached})
	}
	e.dropInstance("s1")
	e.must(CmdReleaseVolume, ReleaseVolumeCmd{VolumeID: "v1", AttachmentID: "a1"})
	e.must(CmdReleaseVolume, ReleaseVolumeCmd{VolumeID: "v2", AttachmentID: "a2"})
	if v := e.wantStatus("v1", VolumeDeleting); len(v.Attachments) != 0 {
		t.Fatalf("delete-on-termination volume still attached: %+v", v.Attachments)
	}
	e.wantStatus("v2", VolumeAvailable)
}
