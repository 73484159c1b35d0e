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
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/gossip"
	"github.com/peerstack/peerstack/rest"
	"github.com/peerstack/peerstack/rest/compute"
)

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
	for _, m := range b.hosts.Members() {
		live[m.Name] = m
	}
	sn := b.State()
	members := sn.Members()
	out := make([]compute.Host, 0, len(members))
	for _, m := range members {
		h := compute.Host{ID: m.ID, Name: m.Name, Disabled: m.Disabled, DisabledReason: m.DisabledBy}
		if host, _, err := net.SplitHostPort(m.APIAddr); err == nil {
			h.IP = host
		}
		if g, ok := live[m.ID]; ok {
			h.VCPUs, h.RAMMB, h.DiskGB = g.Meta.VCPUs, g.Meta.RAMMB, g.Meta.DiskGB
			h.Up = g.State == gossip.StateAlive && !g.Meta.Leaving && !sn.HostDown(m.ID)
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
	req.Header.Set(compute.ConsoleGrantHeader, compute.ConsoleGrantFrom(ctx))
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
