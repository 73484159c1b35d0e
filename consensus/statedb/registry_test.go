package statedb

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// goldenCommands pins every command number to its name. Numbers are part
// of the Raft log format: a new command adds a line; a line never changes
// or goes away (a retired command keeps its number forever).
var goldenCommands = map[CmdType]string{
	1:   "Bootstrap",
	2:   "RegisterMember",
	3:   "RemoveMember",
	4:   "CreateJoinToken",
	5:   "ConsumeJoinToken",
	6:   "SetHostEnabled",
	7:   "UpdateSettings",
	8:   "SetHostHealth",
	9:   "FailoverInstance",
	10:  "EvacuateInstance",
	11:  "UpdateHASettings",
	12:  "SettleFenceTimeout",
	66:  "CoverFenceTimeout",
	13:  "RemoveHost",
	20:  "CreateProject",
	21:  "UpdateProject",
	22:  "DeleteProject",
	23:  "CreateUser",
	24:  "UpdateUser",
	25:  "DeleteUser",
	26:  "CreateRole",
	27:  "DeleteRole",
	28:  "GrantRole",
	29:  "RevokeRole",
	30:  "CreateAppCred",
	31:  "DeleteAppCred",
	32:  "RotateSigningKeys",
	33:  "RevokeToken",
	34:  "LoginFailed",
	35:  "LoginSucceeded",
	36:  "UpdateRole",
	37:  "LoginAttempt",
	38:  "RevokeRoleTokens",
	39:  "DeleteRoleTokens",
	40:  "UpdateRoleTokens",
	50:  "CreateFlavor",
	51:  "DeleteFlavor",
	52:  "SetFlavorAccess",
	53:  "SetFlavorExtraSpecs",
	54:  "CreateKeypair",
	55:  "DeleteKeypair",
	56:  "CreateInstances",
	57:  "DeleteInstance",
	58:  "InstanceAction",
	59:  "UpdateInstance",
	60:  "PlaceInstances",
	61:  "ReportInstance",
	62:  "CreateServerGroup",
	63:  "DeleteServerGroup",
	64:  "ServerAction",
	65:  "SetInstanceTags",
	70:  "RescueServer",
	71:  "SnapshotServer",
	72:  "FinishSnapshot",
	73:  "ResizeServer",
	74:  "SetInstanceDescription",
	75:  "SetFlavorDescription",
	76:  "AttachVolumeTagged",
	77:  "CreateInstancesOnHost",
	78:  "CreateServerGroupWithRules",
	79:  "CreateInstancesPlacedBoot",
	100: "CreateImage",
	101: "UpdateImage",
	102: "DeleteImage",
	103: "StartImageUpload",
	104: "FinishImageUpload",
	105: "KillImage",
	106: "AddImageTag",
	107: "RemoveImageTag",
	108: "AddImageMember",
	109: "UpdateImageMember",
	110: "ReportImageHolder",
	111: "RemoveImageMember",
	112: "SetImageCopies",
	130: "CreateNetwork",
	131: "UpdateNetwork",
	132: "DeleteNetwork",
	133: "CreateSubnet",
	134: "UpdateSubnet",
	135: "DeleteSubnet",
	136: "CreatePort",
	137: "UpdatePort",
	138: "DeletePort",
	140: "ReportPort",
	141: "TagResource",
	150: "CreateSecGroup",
	151: "UpdateSecGroup",
	152: "DeleteSecGroup",
	153: "CreateSecGroupRule",
	154: "DeleteSecGroupRule",
	155: "EnsureDefaultSecGroup",
	156: "SetServerSecGroup",
	157: "CreateAddressGroup",
	158: "UpdateAddressGroup",
	159: "DeleteAddressGroup",
	160: "SetNetworkPortSecurity",
	165: "CreateRouter",
	166: "UpdateRouter",
	167: "DeleteRouter",
	168: "AddRouterInterface",
	169: "RemoveRouterInterface",
	170: "CreateFloatingIP",
	171: "UpdateFloatingIP",
	172: "DeleteFloatingIP",
	173: "ReportFloatingIP",
	174: "SetHostNetworks",
	180: "CreateVolume",
	181: "UpdateVolume",
	182: "DeleteVolume",
	183: "ExtendVolume",
	184: "AttachVolume",
	185: "DetachVolume",
	186: "ResetVolumeStatus",
	187: "ReleaseVolume",
	188: "VolumeHostGone",
	189: "PlaceVolume",
	190: "ReportVolume",
	191: "SetQuotas",
	192: "DeleteQuotas",
	193: "SetDefaultQuotas",
	194: "EnableQuotas",
}

func TestCommandNumbers(t *testing.T) {
	all := Commands().All()
	seen := map[CmdType]bool{}
	for _, s := range all {
		seen[s.Type] = true
		want, ok := goldenCommands[s.Type]
		switch {
		case !ok:
			t.Errorf("command %d (%s) is not in goldenCommands: add it there (numbers are the Raft log format)", s.Type, s.Name)
		case want != s.Name:
			t.Errorf("command %d is %s; it was %s: never renumber or reuse a command number, take a free one", s.Type, s.Name, want)
		}
	}
	for n, name := range goldenCommands {
		if !seen[n] {
			t.Errorf("command %d (%s) is no longer registered: a log holding it could not be replayed", n, name)
		}
	}
}

// TestEveryCommandDecodesAndApplies runs every registered command with a
// zero payload through the store: its payload type must be a struct that
// survives JSON, and the apply function must decode exactly that type
// (decode reports a mismatch as an internal error). Business errors are
// fine; a fatal stop or a mismatch is not.
func TestEveryCommandDecodesAndApplies(t *testing.T) {
	for _, s := range Commands().All() {
		if s.apply == nil {
			t.Errorf("%s: no apply function", s)
			continue
		}
		if s.PayloadType() == nil || s.PayloadType().Kind() != reflect.Struct {
			t.Errorf("%s: payload type %v is not a struct", s, s.PayloadType())
			continue
		}
		zero := reflect.New(s.PayloadType()).Interface()
		c, err := NewCommand(s.Type, "r", t0, zero)
		if err != nil {
			t.Errorf("%s: encode zero payload: %v", s, err)
			continue
		}
		if _, err := s.decodePayload(c); err != nil {
			t.Errorf("%s: zero payload does not decode back: %v", s, err)
		}
		b, _ := c.Encode()
		res := NewStore().Apply(1, b)
		var fe *FatalError
		if errors.As(res.Err, &fe) {
			t.Errorf("%s: zero payload stops the state machine: %v", s, res.Err)
		}
		if res.Err != nil && strings.Contains(res.Err.Error(), "the registry says") {
			t.Errorf("%s: registered payload type is not what apply decodes: %v", s, res.Err)
		}
	}
}

func TestNewRegistryRefusesBadRows(t *testing.T) {
	nop := func(*Txn, *Command) error { return nil }
	cases := map[string][]CmdSpec{
		"number twice": {Cmd[DeleteCmd](1, "A", nop), Cmd[DeleteCmd](1, "B", nop)},
		"name twice":   {Cmd[DeleteCmd](1, "A", nop), Cmd[DeleteCmd](2, "A", nop)},
		"no apply":     {Cmd[DeleteCmd](1, "A", nil)},
		"no name":      {Cmd[DeleteCmd](1, "", nop)},
		"no payload":   {{Type: 1, Name: "A", apply: nop}},
		"bad version":  {Cmd[DeleteCmd](1, "A", nop).Since("three")},
	}
	for name, specs := range cases {
		if _, err := NewRegistry(specs...); err == nil {
			t.Errorf("%s: NewRegistry accepted it", name)
		}
	}
	if _, err := Commands().With(Cmd[DeleteCmd](CmdCreateProject, "Other", nop)); err == nil {
		t.Error("With accepted a number already registered")
	}
}

// TestUnapplicableEntryIsFatal: an entry this build cannot apply stops
// the state machine (FatalError) and changes nothing, not even the
// applied index; a business error does not.
func TestUnapplicableEntryIsFatal(t *testing.T) {
	s := NewStore()
	if r := apply(t, s, 1, CmdCreateProject, "ok", Project{ID: "p1", Name: "demo"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	bad := map[string][]byte{
		"empty":            nil,
		"not json":         []byte("{"),
		"unknown type":     []byte(`{"type":9999,"req":"u","data":{}}`),
		"payload mismatch": []byte(`{"type":20,"req":"m","data":"x"}`),
		"payload garbage":  []byte(`{"type":20,"req":"g","data":{"enabled":"yes"}}`),
	}
	for name, b := range bad {
		r := s.Apply(2, b)
		var fe *FatalError
		if !errors.As(r.Err, &fe) || fe.Index != 2 {
			t.Errorf("%s: Apply = %+v; want a FatalError at index 2", name, r)
		}
		if s.AppliedIndex() != 1 {
			t.Errorf("%s: applied index moved to %d", name, s.AppliedIndex())
		}
	}
	r := apply(t, s, 2, CmdDeleteProject, "nf", DeleteCmd{ID: "nope"})
	var fe *FatalError
	if !errors.Is(r.Err, ErrNotFound) || errors.As(r.Err, &fe) || s.AppliedIndex() != 2 {
		t.Fatalf("business error = %+v (applied %d); want not found, applied 2", r, s.AppliedIndex())
	}
}

func encoded(t *testing.T, typ CmdType, payload any) []byte {
	t.Helper()
	c, err := NewCommand(typ, "req-"+string(rune('a'+typ%26)), t0, payload)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.Encode()
	return b
}

func TestAdmitRefusesWhatCannotApply(t *testing.T) {
	reg := Commands()
	sn := NewStore().Snapshot()
	if _, err := reg.Admit(sn, encoded(t, CmdCreateProject, Project{ID: "p", Name: "p"})); err != nil {
		t.Fatalf("good command refused: %v", err)
	}
	cases := []struct {
		name string
		data []byte
		want *Error
	}{
		{"not json", []byte("{"), ErrInvalid},
		{"payload does not decode", []byte(`{"type":20,"data":{"enabled":"yes"}}`), ErrInvalid},
		{"unknown type", []byte(`{"type":9999,"data":{}}`), ErrConflict},
	}
	for _, c := range cases {
		if _, err := reg.Admit(sn, c.data); !errors.Is(err, c.want) {
			t.Errorf("%s: Admit = %v; want %s", c.name, err, c.want.Kind)
		}
	}
}

// TestVersionGate: a command gated at 0.3.0 is refused while a member
// runs 0.2.0 (or reports nothing) and admitted once every member runs
// 0.3.0 or newer.
func TestVersionGate(t *testing.T) {
	const cmdGated CmdType = 999
	reg, err := Commands().With(Cmd[DeleteCmd](cmdGated, "Gated", func(*Txn, *Command) error { return nil }).Since("0.3.0"))
	if err != nil {
		t.Fatal(err)
	}
	s := NewStoreFor(reg)
	idx := uint64(0)
	register := func(id, version string) {
		t.Helper()
		idx++
		if r := apply(t, s, idx, CmdRegisterMember, "", Member{ID: id, Name: id, Version: version}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	gated := encoded(t, cmdGated, DeleteCmd{ID: "x"})
	register("old", "0.2.0")
	register("new", "0.3.0")
	_, err = reg.Admit(s.Snapshot(), gated)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "old") || !strings.Contains(err.Error(), "0.2.0") {
		t.Fatalf("Admit with a 0.2.0 member = %v; want a conflict naming it", err)
	}
	register("old", "0.3.0")
	if _, err := reg.Admit(s.Snapshot(), gated); err != nil {
		t.Fatalf("Admit with every member at 0.3.0 = %v", err)
	}
	register("silent", "")
	if _, err := reg.Admit(s.Snapshot(), gated); !errors.Is(err, ErrConflict) {
		t.Fatalf("Admit with a member reporting no version = %v; want a conflict", err)
	}
	register("silent", "v0.10.0")
	if _, err := reg.Admit(s.Snapshot(), gated); err != nil {
		t.Fatalf("Admit with members at 0.3.0 and 0.10.0 = %v", err)
	}
	// An ungated command is never held back.
	if _, err := reg.Admit(s.Snapshot(), encoded(t, CmdCreateProject, Project{ID: "p", Name: "p"})); err != nil {
		t.Fatal(err)
	}
}

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"0.2.0", "0.3.0", -1},
		{"0.3.0", "0.3.0", 0},
		{"v0.3.0", "0.3.0", 0},
		{"0.10.0", "0.9.0", 1},
		{"1.0.0", "0.99.99", 1},
		{"0.3.0-rc.1", "0.3.0", -1},
		{"0.3.0-rc.2", "0.3.0-rc.10", -1},
		{"0.3.0-alpha", "0.3.0-1", 1},
		{"0.3.0+build5", "0.3.0", 0},
		{"", "0.0.1", -1},
		{"garbage", "0.0.1", -1},
		{"0.3", "0.0.1", -1},
		{"01.2.3", "0.0.1", -1},
	}
	for _, c := range cases {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d; want %d", c.a, c.b, got, c.want)
		}
		if got := CompareVersions(c.b, c.a); got != -c.want {
			t.Errorf("CompareVersions(%q, %q) = %d; want %d", c.b, c.a, got, -c.want)
		}
	}
}

// Commands decode the same from their JSON as before the registry: the
// envelope is part of the log format too.
func TestCommandEnvelope(t *testing.T) {
	c, err := NewCommand(CmdDeleteProject, "r1", t0, DeleteCmd{ID: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.Encode()
	want := `{"type":22,"req":"r1","time":"2026-01-02T03:04:05Z","data":{"id":"p1"}}`
	if string(b) != want {
		t.Fatalf("encoded = %s; want %s", b, want)
	}
	var back Command
	if err := json.Unmarshal(b, &back); err != nil || back.Type != CmdDeleteProject {
		t.Fatalf("decode = %+v, %v", back, err)
	}
}
