package consensus

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

	"github.com/peerstack/peerstack/consensus/statedb"
)

// fsm adapts the state store to raft.FSM.
type fsm struct {
	store *statedb.Store
}

func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return statedb.Result{Index: l.Index}
	}
	return f.store.Apply(l.Index, l.Data)
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.store.Snapshot()}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
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
