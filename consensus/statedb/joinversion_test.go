package statedb

import "testing"

func TestJoinFloor(t *testing.T) {
	const cmdGated CmdType = 999
	reg, err := Commands().With(Cmd[DeleteCmd](cmdGated, "Gated", func(*Txn, *Command) error { return nil }).Since("0.3.0"))
	if err != nil {
		t.Fatal(err)
	}
	s := NewStoreFor(reg)
	if got := reg.JoinFloor(s.Snapshot()); got != "" {
		t.Fatalf("floor with no members = %q; want none", got)
	}
	idx := uint64(0)
	register := func(id, version string) {
		t.Helper()
		idx++
		if r := apply(t, s, idx, CmdRegisterMember, "", Member{ID: id, Name: id, Version: version}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	register("silent", "")
	if got := reg.JoinFloor(s.Snapshot()); got != "" {
		t.Fatalf("floor with a member reporting no version = %q; want none (no gated command can be in the log)", got)
	}
	register("silent", "0.2.0")
	register("new", "0.3.0")
	if got := reg.JoinFloor(s.Snapshot()); got != wave2 {
		t.Fatalf("floor with members at 0.2.0 and 0.3.0 = %q; want %s", got, wave2)
	}
	register("silent", "0.3.1")
	if got := reg.JoinFloor(s.Snapshot()); got != "0.3.0" {
		t.Fatalf("floor with every member at 0.3.0 or newer = %q; want 0.3.0", got)
	}
}
