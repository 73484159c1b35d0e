package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/attributestags"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
)

// The operations a client draws from.
const (
	opWrite  = "write"  // PUT a register network's description
	opRead   = "read"   // an empty PUT of a register network: the answer is read after the write applied
	opGet    = "get"    // GET a register network from the host's local state
	opLRead  = "lread"  // GET a register network asking for a linearizable read
	opCreate = "create" // POST a uniquely named network
	opDelete = "delete" // DELETE a network this client created
	opPort   = "port"   // POST a port on the shared network (an IP and MAC allocation)
	opUnport = "unport" // DELETE a port this client created
	opTag    = "tag"    // PUT /networks/{id}/tags/{tag}: add a unique tag to the set network
)

// Outcomes of an operation.
const (
	outOK   = "ok"   // 2xx: it happened
	outFail = "fail" // 4xx: it did not happen
	outInfo = "info" // timeout, connection error, 5xx: it may have happened
)

// Op is one operation of the history, with its invoke and return times
// (ns since the run started).
type Op struct {
	Seq     int    `json:"seq"`
	Client  int    `json:"client"`
	Proc    int    `json:"proc"` // a new one after each indeterminate op, as in Jepsen
	Kind    string `json:"kind"`
	Key     string `json:"key,omitempty"`   // register network, or created network's name
	Value   string `json:"value,omitempty"` // written description
	Host    int    `json:"host"`
	Call    int64  `json:"call_ns"`
	Return  int64  `json:"return_ns"`
	Outcome string `json:"outcome"`
	Status  int    `json:"status,omitempty"`
	Err     string `json:"err,omitempty"`
	Rev     int    `json:"rev,omitempty"` // revision_number in the answer
	Got     string `json:"got,omitempty"` // description in the answer
	ID      string `json:"id,omitempty"`  // created or deleted resource
	IP      string `json:"ip,omitempty"`
	MAC     string `json:"mac,omitempty"`
	Nemesis string `json:"nemesis,omitempty"` // the fault in effect at invoke
}

// history collects operations from every client.
type history struct {
	mu   sync.Mutex
	t0   time.Time
	ops  []Op
	nem  []NemesisEvent
	cur  string // the fault in effect
	seqs int
}

func (h *history) now() int64 { return int64(time.Since(h.t0)) }

func (h *history) add(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seqs++
	op.Seq = h.seqs
	h.ops = append(h.ops, op)
}

func (h *history) setFault(kind string) {
	h.mu.Lock()
	h.cur = kind
	h.mu.Unlock()
}

func (h *history) fault() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur
}

func (h *history) addNemesis(ev NemesisEvent) {
	h.mu.Lock()
	h.nem = append(h.nem, ev)
	h.mu.Unlock()
}

// workload is what the clients share: the register networks, the shared
// network for ports, and the names' prefix.
type workload struct {
	cl       []*hostClient
	regs     map[string]string // register name → network id
	regNames []string
	portNet  string
	tagNets  []string // the set networks; none without tag operations
	prefix   string   // of created networks' names
	timeout  time.Duration
	maxLive  int // networks a client keeps before it deletes
	hist     *history
	// volumes adds volume creates and deletes (NFS storage only).
	volumes bool
	// servers are the HA servers volumes are attached to (with guests).
	servers []string
	// nasCheck and nasSummary are what the volume and guest checks found.
	nasCheck   []string
	nasSummary string
	// stateCheck and stateSummary are what the state-digest check found.
	stateCheck   []string
	stateSummary string
	// hostCheck and hostSummary are what the reconcile check found.
	hostCheck   []string
	hostSummary string
}

// client is one concurrent client: its own random source, its networks.
type client struct {
	w     *workload
	id    int
	proc  int
	rnd   *rand.Rand
	n     int
	live  []string     // ids of networks it created (acknowledged)
	ports []string     // ids of ports it created (acknowledged)
	vols  []string     // ids of volumes it created (acknowledged)
	att   []attachment // volumes it attached (acknowledged), not yet detached
	procs func() int
}

// run issues operations until ctx ends.
func (c *client) run(ctx context.Context, pause time.Duration) {
	for ctx.Err() == nil {
		c.step(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(c.rnd.Int64N(int64(pause) + 1))):
		}
	}
}

// step picks an operation and a host and records the outcome.
func (c *client) step(ctx context.Context) {
	w := c.w
	hc := w.cl[c.rnd.IntN(len(w.cl))]
	c.n++
	op := Op{Client: c.id, Proc: c.proc, Host: hc.idx, Nemesis: w.hist.fault()}
	if w.volumes && c.volumeOp(&op) {
		c.issue(ctx, hc, op)
		return
	}
	r := c.rnd.IntN(100)
	switch {
	case r < 10 && len(w.tagNets) > 0:
		op.Kind, op.Key, op.Value = opTag, w.tagNets[c.rnd.IntN(len(w.tagNets))], fmt.Sprintf("c%d-%d", c.id, c.n)
	case r < 30:
		op.Kind, op.Key, op.Value = opWrite, w.regNames[c.rnd.IntN(len(w.regNames))], fmt.Sprintf("c%d-%d", c.id, c.n)
	case r < 50:
		op.Kind, op.Key = opRead, w.regNames[c.rnd.IntN(len(w.regNames))]
	case r < 58:
		op.Kind, op.Key = opGet, w.regNames[c.rnd.IntN(len(w.regNames))]
	case r < 65:
		op.Kind, op.Key = opLRead, w.regNames[c.rnd.IntN(len(w.regNames))]
	case r < 90:
		if len(c.live) >= w.maxLive || (len(c.live) > 0 && r >= 80) {
			k := c.rnd.IntN(len(c.live))
			op.Kind, op.ID = opDelete, c.live[k]
		} else {
			op.Kind, op.Key = opCreate, fmt.Sprintf("%s-c%d-%d", w.prefix, c.id, c.n)
		}
	case len(c.ports) >= w.maxLive:
		op.Kind, op.ID = opUnport, c.ports[c.rnd.IntN(len(c.ports))]
	default:
		op.Kind = opPort
	}
	c.issue(ctx, hc, op)
}

// issue sends op to hc and records the outcome.
func (c *client) issue(ctx context.Context, hc *hostClient, op Op) {
	w := c.w
	octx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	op.Call = w.hist.now()
	err := c.do(octx, hc, &op)
	op.Return = w.hist.now()
	op.Outcome, op.Status = classify(err)
	if err != nil {
		op.Err = trim(err.Error(), 300)
	}
	if ctx.Err() != nil && op.Outcome == outInfo && (op.Kind == opRead || op.Kind == opGet || op.Kind == opLRead) {
		return // a read cut by the end of the run says nothing
	}
	switch {
	case op.Kind == opCreate && op.Outcome == outOK:
		c.live = append(c.live, op.ID)
	case op.Kind == opDelete && op.Outcome != outFail:
		// Acknowledged or maybe deleted: this client no longer uses it.
		c.live = removeString(c.live, op.ID)
	case op.Kind == opDelete && op.Status == 404:
		// The host did not know it (yet): try again another time.
	case op.Kind == opPort && op.Outcome == outOK:
		c.ports = append(c.ports, op.ID)
	case op.Kind == opUnport && op.Outcome != outFail:
		c.ports = removeString(c.ports, op.ID)
	}
	c.afterVolume(op)
	w.hist.add(op)
	if op.Outcome == outInfo {
		c.proc = c.procs()
	}
}

func (c *client) do(ctx context.Context, hc *hostClient, op *Op) error {
	w := c.w
	switch op.Kind {
	case opWrite:
		v := op.Value
		n, err := networks.Update(ctx, hc.net, w.regs[op.Key], networks.UpdateOpts{Description: &v}).Extract()
		if err == nil {
			op.Rev, op.Got = n.RevisionNumber, n.Description
		}
		return err
	case opRead:
		n, err := networks.Update(ctx, hc.net, w.regs[op.Key], networks.UpdateOpts{}).Extract()
		if err == nil {
			op.Rev, op.Got = n.RevisionNumber, n.Description
		}
		return err
	case opGet:
		n, err := networks.Get(ctx, hc.net, w.regs[op.Key]).Extract()
		if err == nil {
			op.Rev, op.Got = n.RevisionNumber, n.Description
		}
		return err
	case opLRead:
		var body struct {
			Network networks.Network `json:"network"`
		}
		_, err := hc.net.Get(ctx, hc.net.ServiceURL("networks", w.regs[op.Key]), &body,
			&gophercloud.RequestOpts{MoreHeaders: map[string]string{"X-Peerstack-Consistency": "linearizable"}})
		if err == nil {
			op.Rev, op.Got = body.Network.RevisionNumber, body.Network.Description
		}
		return err
	case opCreate:
		n, err := networks.Create(ctx, hc.net, networks.CreateOpts{Name: op.Key}).Extract()
		if err == nil {
			op.ID = n.ID
		}
		return err
	case opDelete:
		return networks.Delete(ctx, hc.net, op.ID).ExtractErr()
	case opUnport:
		return ports.Delete(ctx, hc.net, op.ID).ExtractErr()
	case opTag:
		return attributestags.Add(ctx, hc.net, "networks", op.Key, op.Value).ExtractErr()
	case opPort:
		p, err := ports.Create(ctx, hc.net, ports.CreateOpts{NetworkID: w.portNet}).Extract()
		if err == nil {
			op.ID, op.MAC = p.ID, p.MACAddress
			if len(p.FixedIPs) > 0 {
				op.IP = p.FixedIPs[0].IPAddress
			}
		}
		return err
	case opVolCreate, opVolDelete, opAttach, opDetach:
		return doVolume(ctx, hc, op)
	}
	return fmt.Errorf("unknown op %q", op.Kind)
}

// classify maps an answer to an outcome: a 4xx is definite, a 5xx or no
// answer may or may not have taken effect.
func classify(err error) (string, int) {
	if err == nil {
		return outOK, 0
	}
	var code gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &code) {
		if code.Actual >= 500 {
			return outInfo, code.Actual
		}
		return outFail, code.Actual
	}
	return outInfo, 0
}

func removeString(s []string, v string) []string {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
