package image_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/members"
)

// TestGophercloud drives the API with gophercloud's image v2 package:
// the calls the CLI makes (Create, Upload, Get, List, Delete) plus Update,
// Download, tags and members.
func TestGophercloud(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	client := func(token string) *gophercloud.ServiceClient {
		pc := &gophercloud.ProviderClient{}
		pc.SetToken(token)
		return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: e.srv.URL + "/image/", ResourceBase: e.srv.URL + "/image/v2/"}
	}
	sc := client(e.demo.Token)
	vis := images.ImageVisibilityShared
	img, err := images.Create(ctx, sc, images.CreateOpts{Name: "gc", DiskFormat: "qcow2", ContainerFormat: "bare",
		Visibility: &vis, Tags: []string{"t1"}, Properties: map[string]string{"hw_architecture": "x86_64"}}).Extract()
	if err != nil {
		t.Fatalf("images.Create: %v", err)
	}
	if img.Status != images.ImageStatusQueued || img.Properties["hw_architecture"] != "x86_64" || img.CreatedAt.IsZero() {
		t.Errorf("created = %+v", img)
	}
	data := qemuImg(t, "-f", "qcow2", "2M")
	// A plain io.Reader: gophercloud sends it chunked.
	if err := imagedata.Upload(ctx, sc, img.ID, io.MultiReader(bytes.NewReader(data))).ExtractErr(); err != nil {
		t.Fatalf("imagedata.Upload: %v", err)
	}
	got, err := images.Get(ctx, sc, img.ID).Extract()
	if err != nil || got.Status != images.ImageStatusActive || got.SizeBytes != int64(len(data)) || got.VirtualSize != 2<<20 || got.Checksum == "" {
		t.Fatalf("images.Get = %+v, %v", got, err)
	}
	rc, err := imagedata.Download(ctx, sc, img.ID).Extract()
	if err != nil {
		t.Fatalf("imagedata.Download: %v", err)
	}
	back, _ := io.ReadAll(rc)
	rc.Close()
	mustEqual(t, "gophercloud download", back, data)

	upd, err := images.Update(ctx, sc, img.ID, images.UpdateOpts{
		images.ReplaceImageName{NewName: "gc2"},
		images.ReplaceImageMinDisk{NewMinDisk: 1},
		images.UpdateImageProperty{Op: images.AddOp, Name: "os_distro", Value: "cirros"},
		images.UpdateImageProperty{Op: images.RemoveOp, Name: "hw_architecture"},
	}).Extract()
	if err != nil || upd.Name != "gc2" || upd.MinDiskGigabytes != 1 || upd.Properties["os_distro"] != "cirros" || upd.Properties["hw_architecture"] != nil {
		t.Fatalf("images.Update = %+v, %v", upd, err)
	}

	for i := range 3 {
		if _, err := images.Create(ctx, sc, images.CreateOpts{Name: "more", Tags: []string{string(rune('a' + i))}}).Extract(); err != nil {
			t.Fatal(err)
		}
	}
	pages, err := images.List(sc, images.ListOpts{Limit: 2}).AllPages(ctx)
	if err != nil {
		t.Fatalf("images.List: %v", err)
	}
	all, err := images.ExtractImages(pages)
	if err != nil || len(all) != 4 {
		t.Fatalf("images.List (limit 2, following next) = %d images, %v; want 4", len(all), err)
	}
	byName, _ := images.List(sc, images.ListOpts{Name: "gc2"}).AllPages(ctx)
	if l, _ := images.ExtractImages(byName); len(l) != 1 || l[0].ID != img.ID {
		t.Errorf("images.List(name=gc2) = %+v", l)
	}

	if _, err := members.Create(ctx, sc, img.ID, e.otherP.ID).Extract(); err != nil {
		t.Fatalf("members.Create: %v", err)
	}
	if _, err := members.Update(ctx, client(e.other.Token), img.ID, e.otherP.ID, members.UpdateOpts{Status: "accepted"}).Extract(); err != nil {
		t.Fatalf("members.Update: %v", err)
	}
	mp, err := members.List(sc, img.ID).AllPages(ctx)
	if ml, _ := members.ExtractMembers(mp); err != nil || len(ml) != 1 || ml[0].Status != "accepted" {
		t.Fatalf("members.List = %+v, %v", ml, err)
	}

	if err := images.Delete(ctx, sc, img.ID).ExtractErr(); err != nil {
		t.Fatalf("images.Delete: %v", err)
	}
	if _, err := images.Get(ctx, sc, img.ID).Extract(); !gophercloud.ResponseCodeIs(err, 404) {
		t.Errorf("Get after delete = %v; want 404", err)
	}
}
