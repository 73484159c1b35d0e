package statedb

import (
	"encoding/json"
	"time"
)

// Command is the envelope of every Raft log entry. The proposer fills in
// ReqID (for exactly-once retries), Time (the only clock apply may use) and
// the typed payload.
type Command struct {
	Type  CmdType         `json:"type"`
	ReqID string          `json:"req"`
	Time  time.Time       `json:"time"`
	Data  json.RawMessage `json:"data"`
	// Caller is who a user command was proposed for (authority.go); nil
	// for host and leader commands.
	Caller *Caller `json:"caller,omitempty"`

	// payload is Data decoded into the registered payload type, set once
	// the command passed the registry (see decode).
	payload any
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

// requestRecord remembers the outcome of an applied request so a retry of
// the same ReqID (after a leader change) is answered, not applied twice.
type requestRecord struct {
	ID      string `json:"id"`
	Index   uint64 `json:"index"`
	ErrKind Kind   `json:"err_kind,omitempty"`
	ErrMsg  string `json:"err_msg,omitempty"`
}

const requestRetention = 50000 // log entries a request record is kept for

// applyCommand applies a command that passed the registry (spec is its
// row; c.payload is set).
func applyCommand(t *Txn, spec CmdSpec, c *Command) Result {
	if c.ReqID != "" {
		if rec, ok := get[requestRecord](t.read(), tblRequests, c.ReqID); ok {
			res := Result{Index: rec.Index, Deduped: true}
			if rec.ErrKind != "" {
				res.Err = &Error{Kind: rec.ErrKind, Msg: rec.ErrMsg}
			}
			return res
		}
	}
	if err := checkCaller(t, spec, c); err != nil {
		return Result{Err: err}
	}
	if err := spec.apply(t, c); err != nil {
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

// decode returns the payload of a command as a *T. A command that passed
// the registry carries it decoded already (the FSM stops on one that does
// not decode); T must then be the registered payload type. A command built
// by hand (apply unit tests) is decoded here, a failure being a bad request.
func decode[T any](c *Command) (*T, error) {
	if c.payload != nil {
		if v, ok := c.payload.(*T); ok {
			return v, nil
		}
		return nil, Errorf(KindInternal, "command %d: apply decodes a %T but the registry says %T", c.Type, new(T), c.payload)
	}
	v := new(T)
	if err := json.Unmarshal(c.Data, v); err != nil {
		return nil, Errorf(KindInvalid, "decode command %d: %v", c.Type, err)
	}
	return v, nil
}
