package statedb

import (
	"encoding/json"
	"fmt"
	"time"
)

// CmdType numbers a command. Numbers are part of the Raft log format: never
// reuse or renumber one; add new commands at the end of their block.
type CmdType uint16

const (
	// Cluster: 1-19.
	CmdBootstrap        CmdType = 1
	CmdRegisterMember   CmdType = 2
	CmdRemoveMember     CmdType = 3
	CmdCreateJoinToken  CmdType = 4
	CmdConsumeJoinToken CmdType = 5
	CmdSetHostEnabled   CmdType = 6

	// Identity: 20-49.
	CmdCreateProject     CmdType = 20
	CmdUpdateProject     CmdType = 21
	CmdDeleteProject     CmdType = 22
	CmdCreateUser        CmdType = 23
	CmdUpdateUser        CmdType = 24
	CmdDeleteUser        CmdType = 25
	CmdCreateRole        CmdType = 26
	CmdDeleteRole        CmdType = 27
	CmdGrantRole         CmdType = 28
	CmdRevokeRole        CmdType = 29
	CmdCreateAppCred     CmdType = 30
	CmdDeleteAppCred     CmdType = 31
	CmdRotateSigningKeys CmdType = 32
	CmdRevokeToken       CmdType = 33
	CmdLoginFailed       CmdType = 34
	CmdLoginSucceeded    CmdType = 35
	CmdUpdateRole        CmdType = 36

	// Compute: 50-99 (compute.go). Images: 100-129 (images.go).
	// Networks: 130-179 (networks.go). Volumes: 180-219 (volumes.go).
)

// Command is the envelope of every Raft log entry. The proposer fills in
// ReqID (for exactly-once retries), Time (the only clock apply may use) and
// the typed payload.
type Command struct {
	Type  CmdType         `json:"type"`
	ReqID string          `json:"req"`
	Time  time.Time       `json:"time"`
	Data  json.RawMessage `json:"data"`
}

// NewCommand encodes payload into a command. reqID must be unique per
// logical request; time is the proposer's clock.
func NewCommand(t CmdType, reqID string, now time.Time, payload any) (*Command, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return nil, Errorf(KindInternal, "encode command %d: %v", t, err)
	}
	return &Command{Type: t, ReqID: reqID, Time: now.UTC(), Data: raw}, nil
}

// Encode returns the bytes that go into the Raft log.
func (c *Command) Encode() ([]byte, error) { return json.Marshal(c) }

// Result is what applying a command produced.
type Result struct {
	Index   uint64
	Err     error
	Deduped bool // the request was applied before; Index is the original one
}

type applyFunc func(t *Txn, c *Command) error

// applyTable maps each command to its apply function: one entry per
// command, each resource file contributing its own map.
var applyTable = mergeApply(coreApply, identityApply, computeApply, imageApply, networkApply, secGroupApply, routingApply, volumeApply, instanceActionApply)

func mergeApply(parts ...map[CmdType]applyFunc) map[CmdType]applyFunc {
	out := map[CmdType]applyFunc{}
	for _, p := range parts {
		for k, v := range p {
			if _, dup := out[k]; dup {
				panic(fmt.Sprintf("statedb: command %d registered twice", k)) // a programming error
			}
			out[k] = v
		}
	}
	return out
}

var coreApply = map[CmdType]applyFunc{
	CmdBootstrap:        applyBootstrap,
	CmdRegisterMember:   applyRegisterMember,
	CmdRemoveMember:     applyRemoveMember,
	CmdCreateJoinToken:  applyCreateJoinToken,
	CmdConsumeJoinToken: applyConsumeJoinToken,
	CmdSetHostEnabled:   applySetHostEnabled,
	CmdUpdateSettings:   applyUpdateSettings,
}

var identityApply = map[CmdType]applyFunc{
	CmdCreateProject:     applyCreateProject,
	CmdUpdateProject:     applyUpdateProject,
	CmdDeleteProject:     applyDeleteProject,
	CmdCreateUser:        applyCreateUser,
	CmdUpdateUser:        applyUpdateUser,
	CmdDeleteUser:        applyDeleteUser,
	CmdCreateRole:        applyCreateRole,
	CmdUpdateRole:        applyUpdateRole,
	CmdDeleteRole:        applyDeleteRole,
	CmdGrantRole:         applyGrantRole,
	CmdRevokeRole:        applyRevokeRole,
	CmdCreateAppCred:     applyCreateAppCred,
	CmdDeleteAppCred:     applyDeleteAppCred,
	CmdRotateSigningKeys: applyRotateSigningKeys,
	CmdRevokeToken:       applyRevokeToken,
	CmdLoginFailed:       applyLoginFailed,
	CmdLoginSucceeded:    applyLoginSucceeded,
}

// requestRecord remembers the outcome of an applied request so a retry of
// the same ReqID (after a leader change) is answered, not applied twice.
type requestRecord struct {
	ID      string `json:"id"`
	Index   uint64 `json:"index"`
	ErrKind Kind   `json:"err_kind,omitempty"`
	ErrMsg  string `json:"err_msg,omitempty"`
}

const requestRetention = 50000 // log entries a request record is kept for

func applyCommand(t *Txn, c *Command) Result {
	if c.ReqID != "" {
		if rec, ok := get[requestRecord](t.read(), tblRequests, c.ReqID); ok {
			res := Result{Index: rec.Index, Deduped: true}
			if rec.ErrKind != "" {
				res.Err = &Error{Kind: rec.ErrKind, Msg: rec.ErrMsg}
			}
			return res
		}
	}
	fn, ok := applyTable[c.Type]
	if !ok {
		return Result{Err: Errorf(KindInternal, "unknown command type %d", c.Type)}
	}
	if err := fn(t, c); err != nil {
		return Result{Err: err}
	}
	recordRequest(t.txn, c, t.Index, nil)
	if t.Index%1024 == 0 {
		pruneRequests(t)
	}
	return Result{}
}

func recordRequest(txn interface{ Insert(string, any) error }, c *Command, index uint64, err error) {
	if c.ReqID == "" {
		return
	}
	rec := &requestRecord{ID: c.ReqID, Index: index}
	if err != nil {
		e := AsError(err)
		rec.ErrKind, rec.ErrMsg = e.Kind, e.Msg
	}
	_ = txn.Insert(tblRequests, rec) // cannot fail: valid table and id index
}

func pruneRequests(t *Txn) {
	if t.Index < requestRetention {
		return
	}
	for _, r := range list[requestRecord](t.read(), tblRequests) {
		if r.Index < t.Index-requestRetention {
			_ = t.txn.Delete(tblRequests, r)
		}
	}
}

// decode unmarshals a command payload; a failure is a bad request from the
// proposer, not a crash.
func decode[T any](c *Command) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(c.Data, v); err != nil {
		return nil, Errorf(KindInvalid, "decode command %d: %v", c.Type, err)
	}
	return v, nil
}
