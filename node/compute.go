package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/node/scheduler"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/compute"
)

// maxPlacementBatch is the most instances one PlaceInstances command
// carries.
const maxPlacementBatch = 1000

// computeState is this node's compute wiring state: the scheduler loop of
// the current leadership term and the test override of the host source.
type computeState struct {
	mu        sync.Mutex
	schedFor  context.Context // the leader context the scheduler loop runs for
	hostsHook func() []gossip.Member
	paused    bool
	resume    chan struct{} // closed when scheduling resumes
}

func (n *Node) computeState() *computeState { return &n.compute }

// SetHostSourceForTest replaces where the scheduler and the hypervisor
// API read host liveness and capacity (normally gossip) with fn; nil
// restores gossip. For tests and benchmarks that simulate many hosts: the
// member records must still exist in the state.
func (n *Node) SetHostSourceForTest(fn func() []gossip.Member) {
	cs := n.computeState()
	cs.mu.Lock()
	cs.hostsHook = fn
	cs.mu.Unlock()
}

// PauseSchedulerForTest stops (true) or resumes (false) placing pending
// instances on this node when it leads. For benchmarks that build a
// backlog first.
func (n *Node) PauseSchedulerForTest(paused bool) {
	cs := n.computeState()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if paused && !cs.paused {
		cs.resume = make(chan struct{})
	}
	if !paused && cs.paused {
		close(cs.resume)
	}
	cs.paused = paused
}

// schedulerPaused returns a channel closed on resume, or nil when running.
func (n *Node) schedulerPaused() <-chan struct{} {
	cs := n.computeState()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.paused {
		return cs.resume
	}
	return nil
}

// gossipMembers is the host source: gossip, or the test override.
func (n *Node) gossipMembers() []gossip.Member {
	cs := n.computeState()
	cs.mu.Lock()
	hook := cs.hostsHook
	cs.mu.Unlock()
	if hook != nil {
		return hook()
	}
	return n.gossip.Members()
}

// computeBackend adapts the node to rest/compute.Backend.
type computeBackend struct{ *Node }

// mountCompute registers the compute API.
func (n *Node) mountCompute(srv *rest.Server) {
	for _, s := range compute.Services(computeBackend{n}) {
		srv.Mount(s)
	}
}

// HostID is this host: its agent makes the boot volumes of the servers
// created through it.
func (b computeBackend) HostID() string { return b.ID() }

// VolumePath is where this host's volume store keeps a volume file.
func (b computeBackend) VolumePath(name, format string) (string, error) {
	return volumeBackend(b).VolumePath(name, format)
}

// Hosts lists every member as a hypervisor: totals and liveness from the
// host source, the disabled flag from the member record.
func (b computeBackend) Hosts() []compute.Host {
	live := map[string]gossip.Member{}
	for _, m := range b.gossipMembers() {
		live[m.Name] = m
	}
	members := b.State().Members()
	out := make([]compute.Host, 0, len(members))
	for _, m := range members {
		h := compute.Host{ID: m.ID, Name: m.Name, Disabled: m.Disabled, DisabledReason: m.DisabledBy}
		if host, _, err := net.SplitHostPort(m.APIAddr); err == nil {
			h.IP = host
		}
		if g, ok := live[m.ID]; ok {
			h.VCPUs, h.RAMMB, h.DiskGB = g.Meta.VCPUs, g.Meta.RAMMB, g.Meta.DiskGB
			h.Up = g.State == gossip.StateAlive && !g.Meta.Leaving
			h.Accel, h.Arch = g.Meta.Accel, g.Meta.Arch
		}
		out = append(out, h)
	}
	return out
}

// ConsoleOutput reads an instance's console from the host that runs it:
// locally, or over the internal mTLS API of that host.
func (b computeBackend) ConsoleOutput(ctx context.Context, inst *statedb.Instance, length int) (string, error) {
	if inst.Host == b.ID() {
		return b.localConsole(ctx, inst.ID, length)
	}
	addr := b.apiAddrOf(inst.Host)
	if addr == "" {
		return "", fmt.Errorf("console of %s: host %s has no known address", inst.ID, inst.Host)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := "https://" + addr + "/internal/v1/instances/" + url.PathEscape(inst.ID) + "/console?length=" + strconv.Itoa(length)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", fmt.Errorf("console of %s: %w", inst.ID, err)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("console of %s from %s: %w", inst.ID, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", fmt.Errorf("console of %s from %s: %w", inst.ID, addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e map[string]struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &e)
		for _, v := range e {
			return "", fmt.Errorf("console of %s from %s: %s", inst.ID, addr, v.Message)
		}
		return "", fmt.Errorf("console of %s from %s: status %d", inst.ID, addr, resp.StatusCode)
	}
	var out struct {
		Output string `json:"output"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", fmt.Errorf("console of %s from %s: %w", inst.ID, addr, err)
	}
	return out.Output, nil
}

// LocalConsole serves another host's console request for an instance that
// runs here.
func (b computeBackend) LocalConsole(ctx context.Context, instanceID string, length int) (string, error) {
	inst, ok := b.State().Instance(instanceID)
	if !ok || inst.Host != b.ID() {
		return "", fmt.Errorf("instance %s does not run on host %s", instanceID, b.Name())
	}
	return b.localConsole(ctx, instanceID, length)
}

// computeLeaderTick makes sure the scheduler loop runs for this leadership
// term. The loop is owned by the leader context: it ends when leadership
// (or the node) does.
func (n *Node) computeLeaderTick(ctx context.Context) {
	cs := n.computeState()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.schedFor == ctx || ctx.Err() != nil {
		return
	}
	cs.schedFor = ctx
	n.wg.Add(1) // leaderLoop holds the group open while we are called
	go func() {
		defer n.wg.Done()
		n.scheduleLoop(ctx)
	}()
}

// planDepth is how many plans may be in flight through Raft at once: the
// next batch is planned while the previous one commits.
const planDepth = 2

// scheduleLoop plans pending instances whenever the state changes (new
// instances, freed capacity, a rejected plan) and at least every second
// (gossip capacity changes). Up to planDepth plans are in flight; a plan
// counts the claims of the plans still in flight and skips their
// instances. The FSM re-checks every claim, so a stale plan is harmless.
func (n *Node) scheduleLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	slots := make(chan struct{}, planDepth)
	var (
		mu       sync.Mutex
		inflight = map[string]string{} // instance id → host ("" for a failure) of plans in flight
		backoff  time.Duration         // set by a failed or useless plan
		wg       sync.WaitGroup
	)
	defer wg.Wait()
	for {
		if resume := n.schedulerPaused(); resume != nil {
			select {
			case <-ctx.Done():
				return
			case <-resume:
			}
		}
		mu.Lock()
		wait := backoff
		backoff = 0
		mu.Unlock()
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		changed := n.raft.Store().Changed()
		mu.Lock()
		sn := n.State()
		skip := make(map[string]string, len(inflight))
		for id, h := range inflight {
			skip[id] = h
		}
		mu.Unlock()
		cmd, ids, more := planRound(sn, n.gossipMembers(), skip)
		if len(ids) == 0 {
			<-slots
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-tick.C:
			}
			continue
		}
		mu.Lock()
		for _, p := range cmd.Placements {
			inflight[p.InstanceID] = p.HostID
		}
		for _, f := range cmd.Failures {
			inflight[f.InstanceID] = ""
		}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			_, err := rest.Propose(ctx, n, statedb.CmdPlaceInstances, cmd)
			progress := false
			after := n.State()
			for _, id := range ids {
				if cur, ok := after.Instance(id); !ok || !cur.Pending() {
					progress = true
					break
				}
			}
			mu.Lock()
			for _, id := range ids {
				delete(inflight, id)
			}
			switch {
			case err != nil && ctx.Err() == nil:
				n.log.Warn("scheduler: plan not committed; retrying", "err", err)
				backoff = 200 * time.Millisecond
			case err == nil && !progress:
				backoff = 100 * time.Millisecond // the FSM rejected the whole plan: let the state settle
			}
			mu.Unlock()
		}()
		if !more {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-tick.C:
			}
		}
	}
}

// planRound plans the oldest pending instances not in flight (at most
// maxPlacementBatch), counting the claims of in-flight placements the
// snapshot does not show yet. It returns the plan, the instances it
// covers and whether more were left for the next round.
func planRound(sn *statedb.Snapshot, live []gossip.Member, inflight map[string]string) (statedb.PlaceInstancesCmd, []string, bool) {
	var batch []*statedb.Instance
	more := false
	for _, i := range sn.PendingInstances() {
		if _, busy := inflight[i.ID]; busy {
			continue
		}
		if len(batch) == maxPlacementBatch {
			more = true
			break
		}
		batch = append(batch, i)
	}
	if len(batch) == 0 {
		return statedb.PlaceInstancesCmd{}, nil, false
	}
	ids := make([]string, len(batch))
	for k, i := range batch {
		ids[k] = i.ID
	}
	return planPlacements(sn, live, batch, inflight), ids, more
}

// planPlacements is the pure part of a scheduling round: scheduler.Plan
// with host liveness and totals from the host source.
func planPlacements(sn *statedb.Snapshot, live []gossip.Member, batch []*statedb.Instance, inflight map[string]string) statedb.PlaceInstancesCmd {
	return scheduler.Plan(sn, schedulerHosts(live), batch, inflight)
}

// schedulerHosts is what the host source says about each member.
func schedulerHosts(live []gossip.Member) []scheduler.Live {
	out := make([]scheduler.Live, 0, len(live))
	for _, g := range live {
		out = append(out, scheduler.Live{ID: g.Name, Alive: g.State == gossip.StateAlive && !g.Meta.Leaving,
			Arch: g.Meta.Arch, VCPUs: g.Meta.VCPUs, RAMMB: g.Meta.RAMMB, DiskGB: g.Meta.DiskGB})
	}
	return out
}
