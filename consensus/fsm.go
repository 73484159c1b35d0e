package consensus

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// fsm adapts the state store to raft.FSM. On an entry this build cannot
// apply it stops for good: it reports the *statedb.FatalError to onFatal
// once and answers every later entry with it, applying nothing.
type fsm struct {
	store   *statedb.Store
	onFatal func(error)
	log     *slog.Logger

	mu     sync.Mutex
	fatal  *statedb.FatalError
	haltCh chan struct{} // closed when fatal is set
}

func newFSM(store *statedb.Store, onFatal func(error), log *slog.Logger) *fsm {
	return &fsm{store: store, onFatal: onFatal, log: log, haltCh: make(chan struct{})}
}

func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return statedb.Result{Index: l.Index}
	}
	if err := f.halted(); err != nil {
		return statedb.Result{Index: l.Index, Err: err}
	}
	res := f.store.Apply(l.Index, l.Data)
	var fe *statedb.FatalError
	if errors.As(res.Err, &fe) {
		f.halt(fe)
	}
	return res
}

// halt stops the state machine at fe and reports it.
func (f *fsm) halt(fe *statedb.FatalError) {
	f.mu.Lock()
	first := f.fatal == nil
	if first {
		f.fatal = fe
		close(f.haltCh)
	}
	f.mu.Unlock()
	if first {
		f.log.Error("state machine stopped: this build cannot apply a committed entry; upgrade this host", "index", fe.Index, "err", fe.Msg)
		f.onFatal(fe)
	}
}

// halted returns the error the state machine stopped at, or nil.
func (f *fsm) halted() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fatal == nil {
		return nil
	}
	return f.fatal
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.store.Snapshot()}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.halted(); err != nil {
		return err
	}
	br := bufio.NewReader(rc)
	var hdr snapshotHeader
	dec := json.NewDecoder(br)
	if err := dec.Decode(&hdr); err != nil {
		return fmt.Errorf("restore snapshot header: %w", err)
	}
	if hdr.Version != 1 {
		return fmt.Errorf("restore snapshot: unknown version %d", hdr.Version)
	}
	return f.store.Restore(dec, hdr.Index)
}

type snapshotHeader struct {
	Version int    `json:"version"`
	Index   uint64 `json:"index"`
}

type fsmSnapshot struct {
	snap *statedb.Snapshot
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	bw := bufio.NewWriter(sink)
	enc := json.NewEncoder(bw)
	err := enc.Encode(snapshotHeader{Version: 1, Index: s.snap.Index})
	if err == nil {
		err = s.snap.Dump(enc)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
