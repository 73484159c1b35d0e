package statedb

import (
	"errors"
	"slices"
	"testing"
)

// TestTagResourceKeepsConcurrentAdds: two hosts adding different tags to
// one network from the same read both keep their tag, because each entry
// adds one tag to the tags the network has when it applies.
func TestTagResourceKeepsConcurrentAdds(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.net("n1")
	ns.must(CmdTagResource, TagResourceCmd{Kind: TagNetwork, ID: "n1", Tag: "red"})
	ns.must(CmdTagResource, TagResourceCmd{Kind: TagNetwork, ID: "n1", Tag: "blue"})
	ns.must(CmdTagResource, TagResourceCmd{Kind: TagNetwork, ID: "n1", Tag: "blue"}) // again: no change
	n := ns.network("n1")
	if !slices.Equal(n.Tags, []string{"red", "blue"}) {
		t.Fatalf("tags = %v; want [red blue]", n.Tags)
	}
	rev := n.Revision
	ns.must(CmdTagResource, TagResourceCmd{Kind: TagNetwork, ID: "n1", Tag: "red", Remove: true})
	if n := ns.network("n1"); !slices.Equal(n.Tags, []string{"blue"}) || n.Revision != rev+1 {
		t.Fatalf("after removing red: tags %v revision %d; want [blue] at %d", n.Tags, n.Revision, rev+1)
	}
	if err := ns.do(CmdTagResource, TagResourceCmd{Kind: TagNetwork, ID: "n1", Tag: "red", Remove: true}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing an absent tag = %v; want not found", err)
	}
	if err := ns.do(CmdTagResource, TagResourceCmd{Kind: TagNetwork, ID: "n1", Tag: "a,b"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a tag with a comma = %v; want invalid", err)
	}
	if err := ns.do(CmdTagResource, TagResourceCmd{Kind: TagNetwork, ID: "nope", Tag: "x"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tagging a missing network = %v; want not found", err)
	}
	if err := ns.do(CmdTagResource, TagResourceCmd{Kind: "volume", ID: "n1", Tag: "x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an unknown kind = %v; want invalid", err)
	}
	for i := range 50 {
		_ = ns.do(CmdTagResource, TagResourceCmd{Kind: TagNetwork, ID: "n1", Tag: string(rune('A' + i))})
	}
	if n := ns.network("n1"); len(n.Tags) != 50 {
		t.Fatalf("%d tags; want the limit of 50", len(n.Tags))
	}
}
