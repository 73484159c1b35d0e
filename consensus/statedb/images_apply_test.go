package statedb

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// imageSeq applies image commands to one store with increasing indexes.
type imageSeq struct {
	t   *testing.T
	s   *Store
	idx uint64
}

func newImageSeq(t *testing.T) *imageSeq { return &imageSeq{t: t, s: NewStore()} }

func (q *imageSeq) do(typ CmdType, payload any) error {
	q.t.Helper()
	q.idx++
	return apply(q.t, q.s, q.idx, typ, "", payload).Err
}

func (q *imageSeq) must(typ CmdType, payload any) {
	q.t.Helper()
	if err := q.do(typ, payload); err != nil {
		q.t.Fatalf("apply %d %+v: %v", typ, payload, err)
	}
}

func (q *imageSeq) image(id string) *Image {
	q.t.Helper()
	img, ok := q.s.Snapshot().Image(id)
	if !ok {
		q.t.Fatalf("image %s is gone", id)
	}
	return img
}

var imgSumA = strings.Repeat("a", 64)

func imgFixture(id string) Image {
	return Image{ID: id, Name: "cirros", ProjectID: "p1", Visibility: "private", DiskFormat: "qcow2", ContainerFormat: "bare",
		Properties: map[string]string{"hw_architecture": "x86_64"}}
}

// activeImage creates and uploads an image held by host h1.
func (q *imageSeq) activeImage(id string) {
	q.t.Helper()
	q.must(CmdCreateImage, imgFixture(id))
	q.must(CmdStartImageUpload, ImageUploadCmd{ID: id, HostID: "h1"})
	q.must(CmdFinishImageUpload, FinishImageUploadCmd{ID: id, Size: 10, VirtualSize: 20, Checksum: "md5", HashAlgo: "sha512",
		HashValue: "sha512v", SHA256: imgSumA, Holders: []string{"h1"}})
}

func TestApplyCreateImage(t *testing.T) {
	cases := []struct {
		name string
		img  func(*Image)
		want error
	}{
		{"ok", func(*Image) {}, nil},
		{"no id", func(i *Image) { i.ID = "" }, ErrInvalid},
		{"no owner", func(i *Image) { i.ProjectID = "" }, ErrInvalid},
		{"bad disk format", func(i *Image) { i.DiskFormat = "vmdk" }, ErrInvalid},
		{"bad container format", func(i *Image) { i.ContainerFormat = "ovf" }, ErrInvalid},
		{"bad visibility", func(i *Image) { i.Visibility = "everyone" }, ErrInvalid},
		{"negative min_disk", func(i *Image) { i.MinDiskGB = -1 }, ErrInvalid},
		{"long name", func(i *Image) { i.Name = strings.Repeat("n", 256) }, ErrInvalid},
		{"empty tag", func(i *Image) { i.Tags = []string{""} }, ErrInvalid},
		{"formats later", func(i *Image) { i.DiskFormat, i.ContainerFormat = "", "" }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := newImageSeq(t)
			img := imgFixture("i1")
			// Fields the proposer must not be able to set.
			img.Status, img.SHA256, img.Holders, img.Size = ImageActive, imgSumA, []string{"h9"}, 99
			tc.img(&img)
			err := q.do(CmdCreateImage, img)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("CreateImage(%s) = %v; want %v", tc.name, err, tc.want)
			}
			if tc.want != nil {
				return
			}
			got := q.image("i1")
			if got.Status != ImageQueued || got.SHA256 != "" || got.Holders != nil || got.Size != 0 || !got.CreatedAt.Equal(t0) {
				t.Errorf("created image = %+v; want queued, no blob, created at %v", got, t0)
			}
		})
	}
	q := newImageSeq(t)
	q.must(CmdCreateImage, imgFixture("i1"))
	if err := q.do(CmdCreateImage, imgFixture("i1")); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate id = %v; want conflict", err)
	}
	noVis := imgFixture("i2")
	noVis.Visibility = ""
	q.must(CmdCreateImage, noVis)
	if v := q.image("i2").Visibility; v != "shared" {
		t.Errorf("default visibility = %q; want shared (Glance's default)", v)
	}
}

func TestApplyImageUploadLifecycle(t *testing.T) {
	q := newImageSeq(t)
	q.must(CmdCreateImage, imgFixture("i1"))
	finish := FinishImageUploadCmd{ID: "i1", Size: 10, SHA256: imgSumA, Holders: []string{"h1", "h1", ImageHolderShared}}
	if err := q.do(CmdFinishImageUpload, finish); !errors.Is(err, ErrConflict) {
		t.Fatalf("finish before start = %v; want conflict", err)
	}
	if err := q.do(CmdKillImage, ImageUploadCmd{ID: "i1"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("kill a queued image = %v; want conflict", err)
	}
	q.must(CmdStartImageUpload, ImageUploadCmd{ID: "i1", HostID: "h1"})
	if img := q.image("i1"); img.Status != ImageSaving || img.UploadHost != "h1" {
		t.Fatalf("after start: %+v; want saving on h1", img)
	}
	if err := q.do(CmdStartImageUpload, ImageUploadCmd{ID: "i1", HostID: "h2"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("second concurrent upload = %v; want conflict", err)
	}
	bad := finish
	bad.SHA256 = "XYZ"
	if err := q.do(CmdFinishImageUpload, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("finish with a bad sum = %v; want invalid", err)
	}
	bad = finish
	bad.Holders = nil
	if err := q.do(CmdFinishImageUpload, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("finish without holder = %v; want invalid", err)
	}
	q.must(CmdFinishImageUpload, finish)
	img := q.image("i1")
	if img.Status != ImageActive || img.SHA256 != imgSumA || !slices.Equal(img.Holders, []string{"h1", ImageHolderShared}) || img.UploadHost != "" {
		t.Fatalf("after upload: %+v; want active, sum, holders [h1 shared]", img)
	}
	if err := q.do(CmdStartImageUpload, ImageUploadCmd{ID: "i1", HostID: "h1"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("upload to an active image = %v; want conflict", err)
	}

	// A killed upload stays killed.
	q.must(CmdCreateImage, imgFixture("i2"))
	q.must(CmdStartImageUpload, ImageUploadCmd{ID: "i2", HostID: "h1"})
	q.must(CmdKillImage, ImageUploadCmd{ID: "i2"})
	if st := q.image("i2").Status; st != ImageKilled {
		t.Fatalf("status after kill = %s; want killed", st)
	}
	if err := q.do(CmdStartImageUpload, ImageUploadCmd{ID: "i2"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("upload to a killed image = %v; want conflict", err)
	}

	// No formats: upload refused.
	nf := imgFixture("i3")
	nf.DiskFormat = ""
	q.must(CmdCreateImage, nf)
	if err := q.do(CmdStartImageUpload, ImageUploadCmd{ID: "i3"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("upload without disk_format = %v; want invalid", err)
	}
}

func imgPtr[T any](v T) *T { return &v }

func TestApplyUpdateImage(t *testing.T) {
	q := newImageSeq(t)
	q.must(CmdCreateImage, imgFixture("i1"))
	q.must(CmdUpdateImage, UpdateImageCmd{ID: "i1", Name: imgPtr("new"), Visibility: imgPtr("public"), Protected: imgPtr(true),
		MinDiskGB: imgPtr(2), MinRAMMB: imgPtr(64), Tags: imgPtr([]string{"a", "b", "a"}), SetProps: map[string]string{"k": "v"},
		RemoveProps: []string{"hw_architecture"}, DiskFormat: imgPtr("raw")})
	img := q.image("i1")
	if img.Name != "new" || img.Visibility != "public" || !img.Protected || img.MinDiskGB != 2 || img.MinRAMMB != 64 ||
		!slices.Equal(img.Tags, []string{"a", "b"}) || img.Properties["k"] != "v" || len(img.Properties) != 1 || img.DiskFormat != "raw" {
		t.Fatalf("updated image = %+v", img)
	}
	cases := []struct {
		name string
		cmd  UpdateImageCmd
		want error
	}{
		{"remove missing property", UpdateImageCmd{ID: "i1", RemoveProps: []string{"nope"}}, ErrConflict},
		{"bad visibility", UpdateImageCmd{ID: "i1", Visibility: imgPtr("x")}, ErrInvalid},
		{"negative min_ram", UpdateImageCmd{ID: "i1", MinRAMMB: imgPtr(-5)}, ErrInvalid},
		{"empty property name", UpdateImageCmd{ID: "i1", SetProps: map[string]string{"": "v"}}, ErrInvalid},
		{"missing image", UpdateImageCmd{ID: "nope", Name: imgPtr("x")}, ErrNotFound},
	}
	for _, tc := range cases {
		if err := q.do(CmdUpdateImage, tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("UpdateImage(%s) = %v; want %v", tc.name, err, tc.want)
		}
	}
	// A failed update changes nothing (one transaction).
	if err := q.do(CmdUpdateImage, UpdateImageCmd{ID: "i1", Name: imgPtr("half"), RemoveProps: []string{"nope"}}); err == nil {
		t.Fatal("update with a missing property succeeded")
	}
	if n := q.image("i1").Name; n != "new" {
		t.Errorf("name after failed update = %q; want unchanged", n)
	}
	q.activeImage("i2")
	if err := q.do(CmdUpdateImage, UpdateImageCmd{ID: "i2", DiskFormat: imgPtr("raw")}); !errors.Is(err, ErrForbidden) {
		t.Errorf("change disk_format of an active image = %v; want forbidden", err)
	}
}

func TestApplyDeleteImage(t *testing.T) {
	q := newImageSeq(t)
	q.must(CmdCreateImage, imgFixture("queued"))
	q.must(CmdDeleteImage, ImageRef{ID: "queued"})
	if _, ok := q.s.Snapshot().Image("queued"); ok {
		t.Fatal("an image nobody holds was not removed at once")
	}
	if err := q.do(CmdDeleteImage, ImageRef{ID: "queued"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v; want not found", err)
	}

	q.activeImage("i1")
	q.must(CmdUpdateImage, UpdateImageCmd{ID: "i1", Protected: imgPtr(true)})
	if err := q.do(CmdDeleteImage, ImageRef{ID: "i1"}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("delete protected = %v; want forbidden", err)
	}
	q.must(CmdUpdateImage, UpdateImageCmd{ID: "i1", Protected: imgPtr(false)})
	q.must(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "i1", HostID: "h2"})
	q.must(CmdDeleteImage, ImageRef{ID: "i1"})
	if img := q.image("i1"); img.Status != ImageDeleted || !slices.Equal(img.Holders, []string{"h1", "h2"}) {
		t.Fatalf("deleted held image = %+v; want status deleted, holders kept", img)
	}
	for _, typ := range []CmdType{CmdUpdateImage, CmdAddImageTag, CmdDeleteImage} {
		if err := q.do(typ, UpdateImageCmd{ID: "i1"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("command %d on a deleted image = %v; want not found", typ, err)
		}
	}
	if err := q.do(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "i1", HostID: "h3"}); !errors.Is(err, ErrConflict) {
		t.Errorf("new holder of a deleted image = %v; want conflict", err)
	}
	q.must(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "i1", HostID: "h1", Drop: true})
	if img := q.image("i1"); !slices.Equal(img.Holders, []string{"h2"}) {
		t.Fatalf("holders after one drop = %v; want [h2]", img.Holders)
	}
	q.must(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "i1", HostID: "h2", Drop: true})
	if _, ok := q.s.Snapshot().Image("i1"); ok {
		t.Fatal("deleted image still recorded after its last holder dropped")
	}
}

func TestApplyReportImageHolder(t *testing.T) {
	q := newImageSeq(t)
	q.activeImage("i1")
	q.must(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "i1", HostID: "h2"})
	q.must(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "i1", HostID: "h2"})
	q.must(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "i1", HostID: "h9", Drop: true})
	if h := q.image("i1").Holders; !slices.Equal(h, []string{"h1", "h2"}) {
		t.Fatalf("holders = %v; want [h1 h2] (idempotent add, drop of a non-holder is a no-op)", h)
	}
	q.must(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "i1", HostID: "h1", Drop: true})
	if img := q.image("i1"); !slices.Equal(img.Holders, []string{"h2"}) || img.Status != ImageActive {
		t.Fatalf("after drop: %+v; want active with [h2]", img)
	}
	if err := q.do(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "nope", HostID: "h1"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("holder of a missing image = %v; want not found", err)
	}
	if err := q.do(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "i1"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("holder without host = %v; want invalid", err)
	}
	q.must(CmdCreateImage, imgFixture("q"))
	if err := q.do(CmdReportImageHolder, ReportImageHolderCmd{ImageID: "q", HostID: "h1"}); !errors.Is(err, ErrConflict) {
		t.Errorf("holder of a queued image = %v; want conflict", err)
	}
	if got := q.s.Snapshot().ImagesWithBlob(imgSumA); len(got) != 1 || got[0].ID != "i1" {
		t.Errorf("ImagesWithBlob = %v; want [i1]", got)
	}
}

func TestApplyImageTags(t *testing.T) {
	q := newImageSeq(t)
	q.must(CmdCreateImage, imgFixture("i1"))
	q.must(CmdAddImageTag, ImageTagCmd{ID: "i1", Tag: "x"})
	q.must(CmdAddImageTag, ImageTagCmd{ID: "i1", Tag: "x"})
	q.must(CmdAddImageTag, ImageTagCmd{ID: "i1", Tag: "y"})
	if tags := q.image("i1").Tags; !slices.Equal(tags, []string{"x", "y"}) {
		t.Fatalf("tags = %v; want [x y]", tags)
	}
	q.must(CmdRemoveImageTag, ImageTagCmd{ID: "i1", Tag: "x"})
	if err := q.do(CmdRemoveImageTag, ImageTagCmd{ID: "i1", Tag: "x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove a missing tag = %v; want not found", err)
	}
	if err := q.do(CmdAddImageTag, ImageTagCmd{ID: "i1", Tag: strings.Repeat("t", 256)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("long tag = %v; want invalid", err)
	}
	for i := range MaxImageTags - 1 {
		q.must(CmdAddImageTag, ImageTagCmd{ID: "i1", Tag: "t" + strings.Repeat("x", i)})
	}
	if err := q.do(CmdAddImageTag, ImageTagCmd{ID: "i1", Tag: "one-too-many"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("tag %d = %v; want invalid", MaxImageTags+1, err)
	}
}

func TestApplyImageMembers(t *testing.T) {
	q := newImageSeq(t)
	q.must(CmdCreateImage, imgFixture("i1"))
	if err := q.do(CmdAddImageMember, ImageMemberCmd{ImageID: "i1", MemberID: "p2"}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("member of a private image = %v; want forbidden", err)
	}
	q.must(CmdUpdateImage, UpdateImageCmd{ID: "i1", Visibility: imgPtr("shared")})
	q.must(CmdAddImageMember, ImageMemberCmd{ImageID: "i1", MemberID: "p2"})
	if err := q.do(CmdAddImageMember, ImageMemberCmd{ImageID: "i1", MemberID: "p2"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate member = %v; want conflict", err)
	}
	img := q.image("i1")
	if img.MemberStatus("p2") != ImageMemberPending || img.MemberStatus("p3") != "" {
		t.Fatalf("members = %+v; want p2 pending", img.Members)
	}
	q.must(CmdUpdateImageMember, ImageMemberCmd{ImageID: "i1", MemberID: "p2", Status: ImageMemberAccepted})
	if st := q.image("i1").MemberStatus("p2"); st != ImageMemberAccepted {
		t.Fatalf("status = %q; want accepted", st)
	}
	cases := []struct {
		name string
		typ  CmdType
		cmd  ImageMemberCmd
		want error
	}{
		{"bad status", CmdUpdateImageMember, ImageMemberCmd{ImageID: "i1", MemberID: "p2", Status: "maybe"}, ErrInvalid},
		{"update non-member", CmdUpdateImageMember, ImageMemberCmd{ImageID: "i1", MemberID: "p3", Status: "accepted"}, ErrNotFound},
		{"remove non-member", CmdRemoveImageMember, ImageMemberCmd{ImageID: "i1", MemberID: "p3"}, ErrNotFound},
		{"empty member", CmdAddImageMember, ImageMemberCmd{ImageID: "i1"}, ErrInvalid},
	}
	for _, tc := range cases {
		if err := q.do(tc.typ, tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("%s = %v; want %v", tc.name, err, tc.want)
		}
	}
	q.must(CmdRemoveImageMember, ImageMemberCmd{ImageID: "i1", MemberID: "p2"})
	if m := q.image("i1").Members; len(m) != 0 {
		t.Fatalf("members after remove = %v", m)
	}
}
