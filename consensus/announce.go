package consensus

import (
	"sync/atomic"
	"time"
)

// commitAnnouncer makes the leader tell followers a new commit index at
// once, for forwarded writes.
//
// hashicorp/raft sends a follower the leader's commit index only with an
// AppendEntries call: one carrying new entries, or, when no entries come,
// one on a timer of CommitTimeout to twice that (2–4 ms by default;
// heartbeats never carry it). A member that forwarded a write answers its
// client only once its own state has applied the entry (read-your-writes),
// so after a lone write it would wait for that timer every time — more
// than the whole write took on the leader. Appending a barrier entry once
// the write has committed makes the leader replicate at once, and that
// call carries a commit index that includes the write.
//
// One barrier is in flight at a time. A write that commits while one is
// in flight raises want; the loop appends another barrier for it, since
// the one in flight may have been sent before that write committed.
type commitAnnouncer struct {
	barrier func() error  // appends a barrier entry and waits until it is applied
	want    atomic.Uint64 // the highest index announced
	done    atomic.Uint64 // a barrier entered the log after this index committed
	running atomic.Bool
}

// announce asks for followers to learn that idx, just committed, is.
func (a *commitAnnouncer) announce(idx uint64) {
	for {
		w := a.want.Load()
		if idx <= w || a.want.CompareAndSwap(w, idx) {
			break
		}
	}
	// Indexes commit in order: one at most done committed before the
	// barrier that covered done entered the log.
	if idx <= a.done.Load() {
		return
	}
	if a.running.CompareAndSwap(false, true) {
		go a.run()
	}
}

func (a *commitAnnouncer) run() {
	for {
		w := a.want.Load()
		if w > a.done.Load() {
			// Appended after w committed, so its replication carries a
			// commit index of at least w. A failure (leadership lost,
			// shutdown) ends the wait all the same: a new leader's
			// entries carry its own commit index.
			_ = a.barrier()
			a.done.Store(w)
			continue
		}
		a.running.Store(false)
		// A write that raised want after the load above, and found the
		// loop still running, relies on this second look.
		if a.want.Load() <= a.done.Load() || !a.running.CompareAndSwap(false, true) {
			return
		}
	}
}

// barrierTimeout bounds how long an announcement waits to enter the log.
const barrierTimeout = time.Second
