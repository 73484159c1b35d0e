package volume_test

import (
	"context"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/availabilityzones"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumetypes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/volumeattach"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// TestGophercloud drives the API with gophercloud v2's block storage and
// volume attach calls, which check status codes and parse Cinder's
// zone-less timestamps strictly.
func TestGophercloud(t *testing.T) {
	e := newEnv(t, "nfs://srv/export")
	ctx := context.Background()
	pc := &gophercloud.ProviderClient{}
	pc.SetToken(e.demo.Token)
	bs := &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: e.url + vpath(e.demoP, "/")}
	nova := &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: e.url + "/compute/v2.1/"}
	srv := e.server(e.demoP, "vm", "host2")

	v, err := volumes.Create(ctx, bs, volumes.CreateOpts{Size: 1, Name: "g1", Metadata: map[string]string{"a": "b"}}, nil).Extract()
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if v.Name != "g1" || v.Size != 1 || v.Status != "creating" || v.CreatedAt.IsZero() || v.Metadata["a"] != "b" || v.VolumeType != "nfs" {
		t.Fatalf("created = %+v", v)
	}
	e.report(statedb.ReportVolumeCmd{VolumeID: v.ID, HostID: "host1", Status: statedb.VolumeAvailable})
	if v, err = volumes.Get(ctx, bs, v.ID).Extract(); err != nil || v.Status != "available" {
		t.Fatalf("Get = %+v, %v", v, err)
	}
	if err := volumes.ExtendSize(ctx, bs, v.ID, volumes.ExtendSizeOpts{NewSize: 2}).ExtractErr(); err != nil {
		t.Fatalf("ExtendSize: %v", err)
	}
	e.report(statedb.ReportVolumeCmd{VolumeID: v.ID, HostID: "host1", Status: statedb.VolumeAvailable})

	att, err := volumeattach.Create(ctx, nova, srv, volumeattach.CreateOpts{VolumeID: v.ID}).Extract()
	if err != nil || att.VolumeID != v.ID || att.ServerID != srv || att.Device != "/dev/vdb" {
		t.Fatalf("volumeattach.Create = %+v, %v", att, err)
	}
	st := e.vol(v.ID)
	e.report(statedb.ReportVolumeCmd{VolumeID: v.ID, HostID: "host2", AttachmentID: st.Attachment().ID, AttachmentState: "attached"})
	pages, err := volumes.List(bs, volumes.ListOpts{Name: "g1"}).AllPages(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	all, err := volumes.ExtractVolumes(pages)
	if err != nil || len(all) != 1 {
		t.Fatalf("ExtractVolumes = %+v, %v", all, err)
	}
	got := all[0]
	if got.Status != "in-use" || got.Size != 2 || len(got.Attachments) != 1 || got.Attachments[0].ServerID != srv ||
		got.Attachments[0].AttachedAt.IsZero() || got.Attachments[0].HostName != "host2" {
		t.Fatalf("listed = %+v", got)
	}
	if l, err := volumeattach.List(nova, srv).AllPages(ctx); err != nil {
		t.Fatalf("volumeattach.List: %v", err)
	} else if atts, err := volumeattach.ExtractVolumeAttachments(l); err != nil || len(atts) != 1 || atts[0].VolumeID != v.ID {
		t.Fatalf("attachments = %+v, %v", atts, err)
	}
	if err := volumeattach.Delete(ctx, nova, srv, v.ID).ExtractErr(); err != nil {
		t.Fatalf("volumeattach.Delete: %v", err)
	}
	e.report(statedb.ReportVolumeCmd{VolumeID: v.ID, HostID: "host2", AttachmentID: st.Attachment().ID, AttachmentState: "detached"})

	tp, err := volumetypes.List(bs, nil).AllPages(ctx)
	if err != nil {
		t.Fatalf("volumetypes.List: %v", err)
	}
	if types, err := volumetypes.ExtractVolumeTypes(tp); err != nil || len(types) != 1 || types[0].Name != "nfs" || !types[0].IsPublic {
		t.Fatalf("types = %+v, %v", types, err)
	}
	zp, err := availabilityzones.List(bs).AllPages(ctx)
	if err != nil {
		t.Fatalf("availabilityzones.List: %v", err)
	}
	if zones, err := availabilityzones.ExtractAvailabilityZones(zp); err != nil || len(zones) != 1 || zones[0].ZoneName != "nova" || !zones[0].ZoneState.Available {
		t.Fatalf("zones = %+v, %v", zones, err)
	}

	if err := volumes.Delete(ctx, bs, v.ID, nil).ExtractErr(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	e.report(statedb.ReportVolumeCmd{VolumeID: v.ID, HostID: "host1", Status: statedb.VolumeDeleted})
	if _, err := volumes.Get(ctx, bs, v.ID).Extract(); !gophercloud.ResponseCodeIs(err, 404) {
		t.Fatalf("Get after delete = %v; want 404", err)
	}
}
