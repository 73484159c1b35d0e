package statedb

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestAddressGroups(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdCreateAddressGroup, CreateAddressGroupCmd{AddressGroup{ID: "ag", Name: "office", ProjectID: "p1",
		Addresses: []string{"10.0.0.7/24", "192.0.2.1", "10.0.0.0/24"}}})
	ag := func() *AddressGroup {
		g, ok := ns.s.Snapshot().AddressGroup("ag")
		if !ok {
			t.Fatal("address group missing")
		}
		return g
	}
	if got := ag().Addresses; !slices.Equal(got, []string{"10.0.0.0/24", "192.0.2.1/32"}) {
		t.Fatalf("addresses = %v; want masked, sorted, without duplicates", got)
	}
	wantErr(t, ns.do(CmdCreateAddressGroup, CreateAddressGroupCmd{AddressGroup{ID: "bad", Name: "x", ProjectID: "p1", Addresses: []string{"10.0.0.0/33"}}}),
		KindInvalid, "Invalid input for addresses")
	ns.must(CmdUpdateAddressGroup, UpdateAddressGroupCmd{ID: "ag", Add: []string{"2001:db8::/64"}, Remove: []string{"192.0.2.1"}})
	if got := ag().Addresses; !slices.Equal(got, []string{"10.0.0.0/24", "2001:db8::/64"}) || ag().Revision != 2 {
		t.Fatalf("after add/remove: %v rev %d", got, ag().Revision)
	}
	wantErr(t, ns.do(CmdUpdateAddressGroup, UpdateAddressGroupCmd{ID: "ag", Add: []string{"10.0.0.1/24"}}), KindInvalid, "Addresses [10.0.0.0/24] already exist")
	wantErr(t, ns.do(CmdUpdateAddressGroup, UpdateAddressGroupCmd{ID: "ag", Remove: []string{"198.51.100.0/24"}}), KindNotFound, "Addresses [198.51.100.0/24] not found")

	// Rules name it; it cannot go while they do; other projects cannot.
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g1", Name: "web", ProjectID: "p1", Stateful: true}})
	ns.must(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r1", GroupID: "g1", Direction: Ingress, Protocol: "tcp", PortMin: intp(22), RemoteAddressGroupID: "ag"})
	wantErr(t, ns.do(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r2", GroupID: "g1", Direction: Ingress, Protocol: "tcp", PortMin: intp(22), RemoteAddressGroupID: "ag"}),
		KindConflict, "Security group rule already exists. Rule id is r1.")
	ns.must(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r3", GroupID: "g1", Direction: Ingress, Protocol: "tcp", PortMin: intp(22)}) // anywhere differs
	wantErr(t, ns.do(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r4", GroupID: "g1", Direction: Ingress, RemoteIP: "10.0.0.0/8", RemoteAddressGroupID: "ag"}),
		KindInvalid, MsgSecRuleRemoteMany)
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "other", Name: "x", ProjectID: "p2", Stateful: true}})
	wantErr(t, ns.do(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r5", GroupID: "other", Direction: Ingress, RemoteAddressGroupID: "ag"}),
		KindNotFound, "Address group ag could not be found.")
	wantErr(t, ns.do(CmdDeleteAddressGroup, DeleteCmd{ID: "ag"}), KindConflict, "Address group ag is in use")
	ns.must(CmdDeleteSecGroupRule, DeleteCmd{ID: "r1"})
	ns.must(CmdDeleteAddressGroup, DeleteCmd{ID: "ag"})
	wantErr(t, ns.do(CmdDeleteAddressGroup, DeleteCmd{ID: "ag"}), KindNotFound, "Address group ag could not be found.")
}

// TestProjectDeleteAddressGroups: a deleted project's address groups go
// with its groups.
func TestProjectDeleteAddressGroups(t *testing.T) {
	ns := newNetStore(t, 1450)
	ns.must(CmdCreateProject, Project{ID: "p2", Name: "demo"})
	ns.must(CmdCreateAddressGroup, CreateAddressGroupCmd{AddressGroup{ID: "ag", Name: "a", ProjectID: "p2", Addresses: []string{"10.0.0.0/8"}}})
	ns.must(CmdCreateSecGroup, CreateSecGroupCmd{SecurityGroup{ID: "g", Name: "g", ProjectID: "p2", Stateful: true}})
	ns.must(CmdCreateSecGroupRule, SecurityGroupRule{ID: "r", GroupID: "g", Direction: Ingress, RemoteAddressGroupID: "ag"})
	ns.must(CmdDeleteProject, DeleteCmd{ID: "p2"})
	sn := ns.s.Snapshot()
	if _, ok := sn.AddressGroup("ag"); ok {
		t.Error("the deleted project's address group was kept")
	}
	if _, ok := sn.SecRule("r"); ok {
		t.Error("the deleted project's rule was kept")
	}
}

func TestAddressGroupsPerProject(t *testing.T) {
	ns := newNetStore(t, 1450)
	for i := range MaxAddressGroupsOfProject {
		ns.must(CmdCreateAddressGroup, CreateAddressGroupCmd{AddressGroup{ID: fmt.Sprint("ag", i), Name: "a", ProjectID: "p1"}})
	}
	err := ns.do(CmdCreateAddressGroup, CreateAddressGroupCmd{AddressGroup{ID: "one-more", Name: "a", ProjectID: "p1"}})
	if !errors.Is(err, ErrOverQuota) || OverQuotaResource(err) != "address_group" {
		t.Fatalf("address group %d: %v, want over quota", MaxAddressGroupsOfProject+1, err)
	}
	ns.must(CmdCreateAddressGroup, CreateAddressGroupCmd{AddressGroup{ID: "elsewhere", Name: "a", ProjectID: "p2"}})
	many := make([]string, MaxAddressGroupAddresses+1)
	for i := range many {
		many[i] = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
	}
	wantErr(t, ns.do(CmdCreateAddressGroup, CreateAddressGroupCmd{AddressGroup{ID: "big", Name: "a", ProjectID: "p2", Addresses: many}}),
		KindInvalid, "An address group may hold at most")
}
