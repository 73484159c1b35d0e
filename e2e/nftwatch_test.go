package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
)

// fwTable is the name of the tables the port filter owns (hv/firewall).
const fwTable = "peerstack-sg"

// nftCommit is one committed nftables transaction of a namespace, as its
// generation message reached the watcher: when it arrived, its size, and
// the destination ports matched by the filter's rules it added and
// deleted.
type nftCommit struct {
	at      time.Time
	changes int // objects the transaction changed (rules, chains, sets, elements)
	added   map[int]bool
	deleted map[int]bool
}

// nftWatch follows the nftables commits of one network namespace through
// a netlink monitor opened in it. The kernel notifies every object of a
// transaction once the transaction is committed (the new generation is in
// force), then a NEWGEN message closing it; the watcher timestamps the
// transaction when that closing message arrives, so its times are upper
// bounds of the moment the rules took effect.
type nftWatch struct {
	ns  *os.File
	mon *nftables.Monitor

	mu      sync.Mutex
	commits []nftCommit
	err     error
	changed chan struct{} // closed and replaced on every commit
	done    chan struct{}
}

// watchNFT starts watching the named namespace (/run/netns/<name>).
func watchNFT(name string) (*nftWatch, error) {
	ns, err := os.Open(filepath.Join("/run/netns", name))
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	// The transactions that rewrite a port's chains carry a message per
	// rule: a large receive buffer keeps the multicast from overflowing.
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())), nftables.WithSockOptions(func(c *netlink.Conn) error {
		return c.SetReadBuffer(16 << 20)
	}))
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("nftables in %s: %w", name, err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(4096))
	ch, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("nftables monitor in %s: %w", name, err)
	}
	w := &nftWatch{ns: ns, mon: mon, changed: make(chan struct{}), done: make(chan struct{})}
	go w.read(ch)
	return w, nil
}

func (w *nftWatch) read(ch chan *nftables.MonitorEvents) {
	defer close(w.done)
	for evs := range ch {
		at := time.Now()
		if g := evs.GeneratedBy; g != nil && g.Type == nftables.MonitorEventTypeOOB {
			w.mu.Lock()
			w.err = fmt.Errorf("nftables monitor: %w", g.Error)
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
			return
		}
		c := nftCommit{at: at, changes: len(evs.Changes), added: map[int]bool{}, deleted: map[int]bool{}}
		for _, e := range evs.Changes {
			r, ok := e.Data.(*nftables.Rule)
			if !ok || e.Error != nil || r.Table == nil || r.Table.Name != fwTable {
				continue
			}
			for _, p := range rulePorts(r.Exprs) {
				if e.Type == nftables.MonitorEventTypeNewRule {
					c.added[p] = true
				} else if e.Type == nftables.MonitorEventTypeDelRule {
					c.deleted[p] = true
				}
			}
		}
		w.mu.Lock()
		w.commits = append(w.commits, c)
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

// rulePorts returns the destination ports a rule compares with: a load of
// the transport header's bytes 2-3 followed by an equality.
func rulePorts(ex []expr.Any) []int {
	var out []int
	for i := 0; i+1 < len(ex); i++ {
		pl, ok := ex[i].(*expr.Payload)
		if !ok || pl.Base != expr.PayloadBaseTransportHeader || pl.Offset != 2 || pl.Len != 2 {
			continue
		}
		if c, ok := ex[i+1].(*expr.Cmp); ok && c.Op == expr.CmpOpEq && len(c.Data) == 2 {
			out = append(out, int(binary.BigEndian.Uint16(c.Data)))
		}
	}
	return out
}

// wait returns the first commit after t0 that match accepts, waiting for
// it until ctx ends.
func (w *nftWatch) wait(ctx context.Context, t0 time.Time, match func(nftCommit) bool) (nftCommit, error) {
	for {
		w.mu.Lock()
		var found *nftCommit
		for i := range w.commits {
			if c := w.commits[i]; c.at.After(t0) && match(c) {
				found = &c
				break
			}
		}
		err, changed := w.err, w.changed
		w.mu.Unlock()
		switch {
		case found != nil:
			return *found, nil
		case err != nil:
			return nftCommit{}, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nftCommit{}, ctx.Err()
		}
	}
}

// forget drops the commits up to t (they are no longer waited for).
func (w *nftWatch) forget(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := 0
	for i < len(w.commits) && !w.commits[i].at.After(t) {
		i++
	}
	w.commits = append([]nftCommit(nil), w.commits[i:]...)
}

// Close stops the watcher.
func (w *nftWatch) Close() {
	_ = w.mon.Close()
	<-w.done
	w.ns.Close()
}
