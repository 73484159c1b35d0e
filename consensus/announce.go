package consensus

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// commitAnnouncer makes the leader tell followers a new commit index at
// once, for forwarded writes, when its disk is fast enough for that to
// pay.
//
// hashicorp/raft sends a follower the leader's commit index only with an
// AppendEntries call: one carrying new entries, or, when no entries come,
// one on a timer of CommitTimeout to twice that (2–4 ms by default;
// heartbeats never carry it). A member that forwarded a write answers its
// client only once its own state has applied the entry (read-your-writes),
// so after a lone write it would wait for that timer every time. Appending
// a barrier entry once the write has committed makes the leader replicate
// at once, and that call carries a commit index that includes the write.
//
// The barrier is not free: the leader writes it to its log before sending
// it and the follower writes it to its log before it takes the commit
// index, two log writes in a row. On a disk where a log write takes half
// the commit timeout or more (an SD card, a busy disk), that is slower than
// the timer, so the announcer stands aside: worth reports whether the
// log writes of late (logTimer) are fast enough.
//
// One barrier is in flight at a time. A write that commits while one is
// in flight raises want; the loop appends another barrier for it, since
// the one in flight may have been sent before that write committed.
type commitAnnouncer struct {
	barrier func() error  // appends a barrier entry and waits until it is applied
	worth   func() bool   // whether a barrier beats the commit timer now
	want    atomic.Uint64 // the highest index announced
	done    atomic.Uint64 // every index up to this one was announced (or its barrier failed)
	running atomic.Bool
}

// announce asks for followers to learn that idx, just committed, is.
func (a *commitAnnouncer) announce(idx uint64) {
	if a.worth != nil && !a.worth() {
		return // the commit timer tells them sooner
	}
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
			// commit index of at least w. If it fails (leadership lost,
			// shutdown, a full queue) the followers learn the commit
			// from the next entries or the commit timer, as without the
			// announcer: there is nothing better to do for w.
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

// logTimer wraps the Raft log store and keeps a moving average of how long
// storing entries takes on this host (its disk's write and sync).
type logTimer struct {
	raft.LogStore
	avg atomic.Int64 // nanoseconds; 0 until the first write
}

func (l *logTimer) StoreLog(log *raft.Log) error {
	defer l.observe(time.Now())
	return l.LogStore.StoreLog(log)
}

func (l *logTimer) StoreLogs(logs []*raft.Log) error {
	defer l.observe(time.Now())
	return l.LogStore.StoreLogs(logs)
}

// observe folds one write's duration into the average (weight 1/8).
func (l *logTimer) observe(start time.Time) {
	d := int64(time.Since(start))
	for {
		old := l.avg.Load()
		next := d
		if old != 0 {
			next = old + (d-old)/8
		}
		if l.avg.CompareAndSwap(old, next) {
			return
		}
	}
}

// below reports whether the average log write is under limit; true
// before the first write.
func (l *logTimer) below(limit time.Duration) bool {
	return time.Duration(l.avg.Load()) < limit
}

// IsMonotonic passes on whether the wrapped store is a
// raft.MonotonicLogStore, which Raft asks of its log store.
func (l *logTimer) IsMonotonic() bool {
	m, ok := l.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
