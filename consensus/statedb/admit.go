package statedb

import (
	"encoding/json"
	"fmt"
)

// Two guards keep a mixed-version cluster from diverging silently:
//
//   - the FSM stops (FatalError) on a committed entry this build cannot
//     apply: an unknown command type or a payload that does not decode into
//     the registered type. Recording it as a per-entry error instead would
//     let hosts running different builds hold different states.
//   - so that a bad proposal cannot stop the cluster, the leader admits a
//     command into the log only if it parses (Admit) and every member runs
//     a version that knows it (CmdSpec.MinVersion against Member.Version).

// FatalError means this build cannot apply a committed log entry. The
// state machine must stop at it: skipping it would fork this host's state
// from the hosts that applied it.
type FatalError struct {
	Index uint64
	Msg   string
}

func (e *FatalError) Error() string {
	return fmt.Sprintf("state machine stopped at log index %d: %s", e.Index, e.Msg)
}

// parseError says why an encoded command cannot be applied by this build.
type parseError struct {
	unknown bool // the type is not in the registry (else: does not decode)
	msg     string
}

func (e *parseError) Error() string { return e.msg }

// parse decodes an encoded command and its payload against the registry.
func (r *Registry) parse(data []byte) (*Command, CmdSpec, *parseError) {
	var c Command
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, CmdSpec{}, &parseError{msg: fmt.Sprintf("command does not decode: %v", err)}
	}
	spec, ok := r.Lookup(c.Type)
	if !ok {
		return &c, CmdSpec{}, &parseError{unknown: true, msg: fmt.Sprintf("unknown command type %d", c.Type)}
	}
	v, err := spec.decodePayload(&c)
	if err != nil {
		return &c, spec, &parseError{msg: err.Error()}
	}
	c.payload = v
	return &c, spec, nil
}

// Admit is the leader's check before a command enters the Raft log: the
// command decodes, its type is known, its payload decodes into the
// registered type, and every member of the state reports a version at
// least the command's MinVersion. Refusals are *Error values the proposer
// gets back:
//
//   - KindInvalid (400) when the command or its payload does not decode:
//     the proposer is broken, a retry cannot help.
//   - KindConflict (409) when the type is unknown to this leader or a
//     member is older than MinVersion: the command conflicts with the
//     cluster's current software versions; it goes through once the
//     upgrade has reached every host, not by retrying now.
func (r *Registry) Admit(sn *Snapshot, data []byte) (*Command, error) {
	c, spec, perr := r.parse(data)
	switch {
	case perr != nil && perr.unknown:
		return nil, Errorf(KindConflict, "The cluster's leader does not know command type %d; a newer host proposed it while the cluster is being upgraded. It is accepted once every host runs the newer version.", c.Type)
	case perr != nil:
		return nil, Errorf(KindInvalid, "Refused command: %s.", perr.msg)
	}
	if err := checkVersions(sn, spec); err != nil {
		return nil, err
	}
	return c, nil
}

// Gate refuses command type t while a member of sn is older than its
// MinVersion. Every host checks it on its own state before proposing, so
// a command never reaches a leader that may not know it (during a rolling
// upgrade an older leader has no admission check of its own); the leader
// checks again in Admit. Unknown types pass here: the leader decides.
func (r *Registry) Gate(sn *Snapshot, t CmdType) error {
	spec, ok := r.Lookup(t)
	if !ok {
		return nil
	}
	return checkVersions(sn, spec)
}

// checkVersions refuses a gated command while a member runs an older
// version than its MinVersion, or has not reported one.
func checkVersions(sn *Snapshot, spec CmdSpec) error {
	if spec.MinVersion == "" {
		return nil
	}
	for _, m := range sn.Members() {
		if CompareVersions(m.Version, spec.MinVersion) >= 0 {
			continue
		}
		have := m.Version
		if have == "" {
			have = "no version reported"
		}
		return Errorf(KindConflict, "Command %s needs every host at version %s or newer; host %s (%s) runs %s. Upgrade it first.",
			spec.Name, spec.MinVersion, m.Name, m.ID, have)
	}
	return nil
}
