package statedb

import (
	"errors"
	"slices"
	"testing"
)

func TestApplySetImageCopies(t *testing.T) {
	q := newImageSeq(t)
	for _, m := range []string{"h1", "h2", "h3"} {
		q.must(CmdRegisterMember, Member{ID: m, Name: m})
	}
	q.must(CmdCreateImage, imgFixture("queued"))
	q.activeImage("i1")

	q.must(CmdSetImageCopies, SetImageCopiesCmd{ImageID: "i1", Hosts: []string{"h2", "h1", "h2"}})
	img := q.image("i1")
	if !slices.Equal(img.DesiredHolders, []string{"h2", "h1"}) || !img.WantsHolder("h1") || img.WantsHolder("h3") {
		t.Fatalf("desired holders = %v; want [h2 h1] (deduplicated, in order)", img.DesiredHolders)
	}
	if !slices.Equal(img.Holders, []string{"h1"}) {
		t.Fatalf("holders = %v; want [h1]: desiring a copy is not holding it", img.Holders)
	}
	cases := []struct {
		name string
		cmd  SetImageCopiesCmd
		want error
	}{
		{"unknown image", SetImageCopiesCmd{ImageID: "nope", Hosts: []string{"h1"}}, ErrNotFound},
		{"queued image", SetImageCopiesCmd{ImageID: "queued", Hosts: []string{"h1"}}, ErrConflict},
		{"not a member", SetImageCopiesCmd{ImageID: "i1", Hosts: []string{"h1", "h9"}}, ErrInvalid},
		{"the shared store", SetImageCopiesCmd{ImageID: "i1", Hosts: []string{ImageHolderShared}}, ErrInvalid},
		{"empty id", SetImageCopiesCmd{ImageID: "i1", Hosts: []string{""}}, ErrInvalid},
	}
	for _, tc := range cases {
		if err := q.do(CmdSetImageCopies, tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("%s = %v; want %v", tc.name, err, tc.want)
		}
	}
	if got := q.image("i1").DesiredHolders; !slices.Equal(got, []string{"h2", "h1"}) {
		t.Fatalf("desired holders after refused commands = %v; want them unchanged", got)
	}

	q.must(CmdSetImageCopies, SetImageCopiesCmd{ImageID: "i1"})
	if got := q.image("i1").DesiredHolders; got != nil {
		t.Fatalf("desired holders after an empty list = %v; want none", got)
	}
	q.must(CmdSetImageCopies, SetImageCopiesCmd{ImageID: "i1", Hosts: []string{"h3"}})
	q.must(CmdDeleteImage, ImageRef{ID: "i1"})
	if err := q.do(CmdSetImageCopies, SetImageCopiesCmd{ImageID: "i1", Hosts: []string{"h1"}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("set copies of a deleted image = %v; want conflict", err)
	}
}
