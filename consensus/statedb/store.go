// Package statedb owns the replicated cluster state: the domain types, the
// go-memdb schema and indexes, the numbered commands and the deterministic
// functions that apply them.
//
// It must not read clocks, generate randomness or do I/O while applying a
// command: timestamps, generated IDs and secrets travel inside the command.
// It imports nothing of the project.
package statedb

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/hashicorp/go-memdb"
)

// table describes one go-memdb table: its schema and how to make a fresh
// value for decoding snapshots.
type table struct {
	schema *memdb.TableSchema
	newObj func() any
}

// idTable builds a table keyed by the string field ID with optional extra
// non-unique string indexes named after their fields.
func idTable(name string, newObj func() any, extra ...string) table {
	idx := map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}
	for _, f := range extra {
		idx[f] = &memdb.IndexSchema{Name: f, AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: f}}
	}
	return table{schema: &memdb.TableSchema{Name: name, Indexes: idx}, newObj: newObj}
}

// tables lists every table of the state: each resource file contributes
// its own list.
var tables = concat(coreTables, identityTables, computeTables, imageTables, networkTables, secGroupTables, routingTables, volumeTables, quotaTables, hostFailTables)

var coreTables = []table{
	idTable(tblMeta, func() any { return &ClusterConfig{} }),
	idTable(tblMembers, func() any { return &Member{} }, "Name"),
	idTable(tblJoinTokens, func() any { return &JoinToken{} }),
	idTable(tblRequests, func() any { return &requestRecord{} }),
	idTable(tblRevokedHosts, func() any { return &RevokedHost{} }),
}

var identityTables = []table{
	idTable(tblProjects, func() any { return &Project{} }, "Name"),
	idTable(tblUsers, func() any { return &User{} }, "Name"),
	idTable(tblRoles, func() any { return &Role{} }, "Name"),
	idTable(tblAssignments, func() any { return &Assignment{} }, "UserID", "ProjectID", "RoleID"),
	idTable(tblAppCreds, func() any { return &AppCredential{} }, "UserID"),
	idTable(tblSigningKeys, func() any { return &SigningKey{} }),
	idTable(tblRevocations, func() any { return &Revocation{} }, "AuditID", "UserID"),
}

func concat[T any](parts ...[]T) []T {
	var out []T
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func schema() *memdb.DBSchema {
	s := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{}}
	for _, t := range tables {
		s.Tables[t.schema.Name] = t.schema
	}
	s.Tables[tblUsage] = usageTable.schema // derived: not in tables, never dumped
	return s
}

// Store is the in-memory indexed state. Reads take immutable snapshots;
// writes happen only through Apply (called by the Raft FSM) and Restore.
type Store struct {
	reg     *Registry
	mu      sync.Mutex // guards db swap, applied and waitCh
	db      *memdb.MemDB
	applied uint64
	waitCh  chan struct{}
}

// NewStore returns an empty store applying this build's commands.
func NewStore() *Store { return NewStoreFor(Commands()) }

// NewStoreFor returns an empty store applying the commands of reg.
func NewStoreFor(reg *Registry) *Store {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		panic(fmt.Sprintf("statedb: invalid schema: %v", err)) // a programming error
	}
	return &Store{reg: reg, db: db, waitCh: make(chan struct{})}
}

// Snapshot returns an immutable view of the current state. Its Index is
// the index of the last command its view includes: commits and the
// applied index move together under s.mu.
func (s *Store) Snapshot() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Snapshot{txn: s.db.Txn(false), db: s.db, Index: s.applied}
}

// AppliedIndex is the Raft index of the last applied command.
func (s *Store) AppliedIndex() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// Changed returns a channel closed at the next applied command or restore.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitCh
}

// commitAt commits txn (nil: nothing to commit) and moves the applied
// index to idx in one step, as Snapshot sees them.
func (s *Store) commitAt(idx uint64, txn *memdb.Txn) {
	s.mu.Lock()
	if txn != nil {
		txn.Commit()
	}
	if idx > s.applied {
		s.applied = idx
	}
	close(s.waitCh)
	s.waitCh = make(chan struct{})
	s.mu.Unlock()
}

// Registry returns the commands this store applies.
func (s *Store) Registry() *Registry { return s.reg }

// Apply applies one encoded command at the given Raft index. Business
// failures are returned as *Error values inside Result. An entry this
// build cannot apply (it does not decode, its type is unknown, its payload
// does not decode into the registered type) returns a *FatalError and
// changes nothing, not even the applied index: the caller must stop
// applying (see admit.go).
func (s *Store) Apply(index uint64, data []byte) Result {
	cmd, spec, perr := s.reg.parse(data)
	if perr != nil {
		return Result{Index: index, Err: &FatalError{Index: index, Msg: perr.msg}}
	}
	s.mu.Lock()
	db := s.db
	s.mu.Unlock()
	txn := db.Txn(true)
	res := applyCommand(&Txn{txn: txn, Index: index, Cmd: cmd}, spec, cmd)
	if !res.Deduped {
		res.Index = index
	}
	switch {
	case res.Deduped:
		txn.Abort()
		s.commitAt(index, nil)
	case res.Err != nil:
		txn.Abort()
		// Record the failure so a retried request gets the same answer.
		rec := db.Txn(true)
		recordRequest(rec, cmd, index, res.Err)
		s.commitAt(index, rec)
	default:
		s.commitAt(index, txn)
	}
	return res
}

// Dump writes every object of every table, in table order and ID order, as
// JSON lines {"t":table,"o":object}. Used for Raft snapshots.
func (sn *Snapshot) Dump(enc *json.Encoder) error {
	for _, t := range tables {
		it, err := sn.txn.Get(t.schema.Name, "id")
		if err != nil {
			return fmt.Errorf("dump %s: %w", t.schema.Name, err)
		}
		for o := it.Next(); o != nil; o = it.Next() {
			raw, err := json.Marshal(o)
			if err != nil {
				return fmt.Errorf("dump %s: %w", t.schema.Name, err)
			}
			if err := enc.Encode(dumpLine{T: t.schema.Name, O: raw}); err != nil {
				return fmt.Errorf("dump %s: %w", t.schema.Name, err)
			}
		}
	}
	return nil
}

// Digest is the SHA-256 (hex) of the snapshot's Dump: two hosts whose
// replicated states are the same have the same digest, whatever their
// applied index (entries that change nothing, such as barriers, leave it).
func (sn *Snapshot) Digest() (string, error) {
	h := sha256.New()
	if err := sn.Dump(json.NewEncoder(h)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type dumpLine struct {
	T string          `json:"t"`
	O json.RawMessage `json:"o"`
}

// Restore replaces the whole state with the lines of a Dump.
func (s *Store) Restore(dec *json.Decoder, index uint64) error {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	makers := map[string]func() any{}
	for _, t := range tables {
		makers[t.schema.Name] = t.newObj
	}
	txn := db.Txn(true)
	for dec.More() {
		var l dumpLine
		if err := dec.Decode(&l); err != nil {
			txn.Abort()
			return fmt.Errorf("restore: decode line: %w", err)
		}
		mk, ok := makers[l.T]
		if !ok {
			continue // a table this version no longer has
		}
		o := mk()
		if err := json.Unmarshal(l.O, o); err != nil {
			txn.Abort()
			return fmt.Errorf("restore %s: %w", l.T, err)
		}
		if err := txn.Insert(l.T, o); err != nil {
			txn.Abort()
			return fmt.Errorf("restore %s: %w", l.T, err)
		}
	}
	if err := rebuildUsage(txn); err != nil {
		txn.Abort()
		return fmt.Errorf("restore: %w", err)
	}
	txn.Commit()
	s.mu.Lock()
	s.db = db
	s.applied = index
	close(s.waitCh)
	s.waitCh = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// Snapshot is an immutable read view. Objects returned from it must not be
// modified: copy before changing.
type Snapshot struct {
	txn   *memdb.Txn
	db    *memdb.MemDB // the database read (nil: a view inside Apply)
	Index uint64
}

// Txn is a write transaction inside Apply.
type Txn struct {
	txn   *memdb.Txn
	Index uint64
	Cmd   *Command
}

// read gives write transactions the same getters as snapshots.
func (t *Txn) read() *Snapshot { return &Snapshot{txn: t.txn, Index: t.Index} }

func get[T any](sn *Snapshot, tbl, id string) (*T, bool) {
	o, err := sn.txn.First(tbl, "id", id)
	if err != nil || o == nil {
		return nil, false
	}
	return o.(*T), true
}

func list[T any](sn *Snapshot, tbl string) []*T {
	it, err := sn.txn.Get(tbl, "id")
	if err != nil {
		return nil
	}
	var out []*T
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, o.(*T))
	}
	return out
}

func listBy[T any](sn *Snapshot, tbl, index, val string) []*T {
	it, err := sn.txn.Get(tbl, index, val)
	if err != nil {
		return nil
	}
	var out []*T
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, o.(*T))
	}
	return out
}

func firstBy[T any](sn *Snapshot, tbl, index, val string) (*T, bool) {
	o, err := sn.txn.First(tbl, index, val)
	if err != nil || o == nil {
		return nil, false
	}
	return o.(*T), true
}

// insert writes o into tbl, replacing the row of its id, and keeps the
// usage counters (quotas_usage.go) in step in the same transaction.
func (t *Txn) insert(tbl string, o any) error {
	if err := countInsert(t.txn, tbl, o, func() error { return t.txn.Insert(tbl, o) }); err != nil {
		return Errorf(KindInternal, "insert %s: %v", tbl, err)
	}
	return nil
}

// delete removes the row of o's id from tbl, and what it counted from
// the usage counters.
func (t *Txn) delete(tbl string, o any) error {
	if err := countDelete(t.txn, tbl, o, func() error { return t.txn.Delete(tbl, o) }); err != nil {
		return Errorf(KindInternal, "delete %s: %v", tbl, err)
	}
	return nil
}

func sortByName[T any](xs []*T, name func(*T) string) []*T {
	sort.SliceStable(xs, func(i, j int) bool { return name(xs[i]) < name(xs[j]) })
	return xs
}
