package compute

import (
	"encoding/json"
	"hash/fnv"
	"net/http"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// hypervisorVersion is what hypervisor_version shows: the control plane
// does not know each host's QEMU version, and clients need a number.
const hypervisorVersion = 1000000

// hostUsage is a host with the claims the state holds against it.
type hostUsage struct {
	Host
	Used    statedb.HostCap
	Running int
}

// hostUsages joins the backend's hosts with the claims of the instances
// placed on them.
func (s *service) hostUsages(sn *statedb.Snapshot) []hostUsage {
	claims := sn.Claims()
	running := map[string]int{}
	for _, i := range sn.Instances() {
		if i.Host != "" {
			running[i.Host]++
		}
	}
	hosts := s.b.Hosts()
	out := make([]hostUsage, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, hostUsage{Host: h, Used: claims[h.ID], Running: running[h.ID]})
	}
	return out
}

// serviceID is a stable positive integer for a host's nova-compute
// service (2.1 service ids are integers).
func serviceID(hostID string) int {
	h := fnv.New32a()
	h.Write([]byte(hostID))
	return int(h.Sum32() & 0x7fffffff)
}

func state(h hostUsage) string {
	if h.Up {
		return "up"
	}
	return "down"
}

func status(h hostUsage) string {
	if h.Disabled {
		return "disabled"
	}
	return "enabled"
}

func cpuInfo(h hostUsage) string {
	b, _ := json.Marshal(map[string]any{
		"arch": h.Arch, "model": "", "vendor": "", "features": []string{},
		"topology": map[string]int{"cells": 1, "sockets": 1, "cores": h.VCPUs, "threads": 1},
	})
	return string(b)
}

func hypervisorBrief(h hostUsage) map[string]any {
	return map[string]any{"id": h.ID, "hypervisor_hostname": h.Name, "state": state(h), "status": status(h)}
}

func hypervisorDetail(h hostUsage) map[string]any {
	var reason any
	if h.DisabledReason != "" {
		reason = h.DisabledReason
	}
	out := hypervisorBrief(h)
	for k, v := range map[string]any{
		"hypervisor_type": "QEMU", "hypervisor_version": hypervisorVersion, "host_ip": h.IP,
		"vcpus": h.VCPUs, "vcpus_used": h.Used.VCPUs, "memory_mb": h.RAMMB, "memory_mb_used": h.Used.RAMMB,
		"local_gb": h.DiskGB, "local_gb_used": h.Used.DiskGB, "free_ram_mb": h.RAMMB - h.Used.RAMMB,
		"free_disk_gb": h.DiskGB - h.Used.DiskGB, "disk_available_least": h.DiskGB - h.Used.DiskGB,
		"current_workload": 0, "running_vms": h.Running, "cpu_info": cpuInfo(h),
		"service":               map[string]any{"host": h.Name, "id": serviceID(h.ID), "disabled_reason": reason},
		"peerstack:accelerator": h.Accel,
	} {
		out[k] = v
	}
	return out
}

func (s *service) listHypervisors(c *rest.Ctx) (any, error) {
	return s.listHypervisorViews(c, hypervisorBrief)
}

func (s *service) listHypervisorsDetail(c *rest.Ctx) (any, error) {
	return s.listHypervisorViews(c, hypervisorDetail)
}

func (s *service) getHypervisor(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Hypervisor"); err != nil {
		return nil, err
	}
	id := c.Var("hv_id")
	sn := s.b.State()
	for _, h := range s.hostUsages(sn) {
		if hypervisorMatches(c, h, id) {
			v, err := s.versionedHypervisor(c, sn, h, hypervisorDetail(h))
			if err != nil {
				return nil, err
			}
			return map[string]any{"hypervisor": v}, nil
		}
	}
	return nil, rest.NotFoundf("Hypervisor with ID %s could not be found.", id)
}

// matchHypervisors finds hypervisors whose host name contains pattern.
func (s *service) matchHypervisors(c *rest.Ctx) ([]hostUsage, error) {
	if atLeast(c, 2, 53) {
		return nil, rest.NotFoundf("The resource could not be found.")
	}
	if err := s.requireAdmin(c, "Hypervisors"); err != nil {
		return nil, err
	}
	pattern := c.Var("pattern")
	var out []hostUsage
	for _, h := range s.hostUsages(s.b.State()) {
		if strings.Contains(h.Name, pattern) {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		return nil, rest.NotFoundf("No hypervisor matching '%s' could be found.", pattern)
	}
	return out, nil
}

func (s *service) searchHypervisors(c *rest.Ctx) (any, error) {
	hs, err := s.matchHypervisors(c)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(hs))
	for _, h := range hs {
		out = append(out, hypervisorBrief(h))
	}
	return map[string]any{"hypervisors": out}, nil
}

func (s *service) hypervisorServers(c *rest.Ctx) (any, error) {
	hs, err := s.matchHypervisors(c)
	if err != nil {
		return nil, err
	}
	sn := s.b.State()
	out := make([]map[string]any, 0, len(hs))
	for _, h := range hs {
		b := hypervisorBrief(h)
		servers := []map[string]string{}
		for _, i := range sn.InstancesOnHost(h.ID) {
			servers = append(servers, map[string]string{"uuid": i.ID, "name": instanceName(i.ID)})
		}
		b["servers"] = servers
		out = append(out, b)
	}
	return map[string]any{"hypervisors": out}, nil
}

func (s *service) hypervisorStatistics(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Hypervisors"); err != nil {
		return nil, err
	}
	st := map[string]int{}
	hs := s.hostUsages(s.b.State())
	for _, h := range hs {
		st["vcpus"] += h.VCPUs
		st["vcpus_used"] += h.Used.VCPUs
		st["memory_mb"] += h.RAMMB
		st["memory_mb_used"] += h.Used.RAMMB
		st["local_gb"] += h.DiskGB
		st["local_gb_used"] += h.Used.DiskGB
		st["free_ram_mb"] += h.RAMMB - h.Used.RAMMB
		st["free_disk_gb"] += h.DiskGB - h.Used.DiskGB
		st["disk_available_least"] += h.DiskGB - h.Used.DiskGB
		st["running_vms"] += h.Running
	}
	st["count"] = len(hs)
	st["current_workload"] = 0
	return map[string]any{"hypervisor_statistics": st}, nil
}

// hypervisorUptime answers 501, as Nova does for drivers without uptime:
// clients (openstack hypervisor show) carry on without it.
func (s *service) hypervisorUptime(c *rest.Ctx) (any, error) {
	if _, err := s.getHypervisor(c); err != nil {
		return nil, err
	}
	return nil, &rest.HTTPError{Status: http.StatusNotImplemented, Msg: "Virt driver does not implement host uptime."}
}

// listAggregates lists host aggregates: there are none (every host is in
// the one availability zone).
func (s *service) listAggregates(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Aggregates"); err != nil {
		return nil, err
	}
	return map[string]any{"aggregates": []any{}}, nil
}

// ---- os-hosts and os-services ----

func (s *service) listHosts(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Hosts"); err != nil {
		return nil, err
	}
	out := []map[string]string{}
	for _, h := range s.b.Hosts() {
		out = append(out, map[string]string{"host_name": h.Name, "service": "compute", "zone": "nova"})
	}
	return map[string]any{"hosts": out}, nil
}

func (s *service) getHost(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Host"); err != nil {
		return nil, err
	}
	name := c.Var("host")
	for _, h := range s.hostUsages(s.b.State()) {
		if h.Name != name {
			continue
		}
		res := func(project string, cpu, mem, disk int) map[string]any {
			return map[string]any{"resource": map[string]any{"host": h.Name, "project": project, "cpu": cpu, "memory_mb": mem, "disk_gb": disk}}
		}
		return map[string]any{"host": []map[string]any{
			res("(total)", h.VCPUs, h.RAMMB, h.DiskGB),
			res("(used_now)", h.Used.VCPUs, h.Used.RAMMB, h.Used.DiskGB),
			res("(used_max)", h.Used.VCPUs, h.Used.RAMMB, h.Used.DiskGB),
		}}, nil
	}
	return nil, rest.NotFoundf("Compute host %s could not be found.", name)
}

func serviceView(h Host, now string) map[string]any {
	var reason any
	if h.DisabledReason != "" {
		reason = h.DisabledReason
	}
	st, stat := "down", "enabled"
	if h.Up {
		st = "up"
	}
	if h.Disabled {
		stat = "disabled"
	}
	return map[string]any{"id": serviceID(h.ID), "binary": "nova-compute", "host": h.Name, "zone": "nova",
		"status": stat, "state": st, "updated_at": now, "disabled_reason": reason}
}

func (s *service) listServices(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Services"); err != nil {
		return nil, err
	}
	host, binary := c.Query("host"), c.Query("binary")
	now := s.b.Now().UTC().Format(timeUSG)
	out := []map[string]any{}
	for _, h := range s.b.Hosts() {
		if (host != "" && h.Name != host) || (binary != "" && binary != "nova-compute") {
			continue
		}
		out = append(out, versionedService(c, h, serviceView(h, now)))
	}
	return map[string]any{"services": out}, nil
}

func (s *service) enableService(c *rest.Ctx) (any, error) { return s.setService(c, false) }

func (s *service) disableService(c *rest.Ctx) (any, error) { return s.setService(c, true) }

// setService serves PUT /os-services/{enable,disable,disable-log-reason}
// with {"host","binary"[,"disabled_reason"]}: the host's placements are
// switched off or on through the member record.
func (s *service) setService(c *rest.Ctx, disable bool) (any, error) {
	if err := s.requireAdmin(c, "Service"); err != nil {
		return nil, err
	}
	var req struct {
		Host           *string `json:"host"`
		Binary         *string `json:"binary"`
		DisabledReason *string `json:"disabled_reason"`
	}
	var raw json.RawMessage
	if err := c.Decode(&raw); err != nil {
		return nil, err
	}
	if err := decodeStrict("service", raw, &req); err != nil {
		return nil, err
	}
	if req.Host == nil || req.Binary == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute service. 'host' and 'binary' are required properties")
	}
	if *req.Binary != "nova-compute" {
		return nil, rest.NotFoundf("Service %s on host %s could not be found.", *req.Binary, *req.Host)
	}
	reason := ""
	if req.DisabledReason != nil {
		if !disable {
			return nil, rest.BadRequest("Invalid input for field/attribute service. 'disabled_reason' only goes with disable")
		}
		reason = *req.DisabledReason
		if len(reason) > maxNameLength {
			return nil, rest.BadRequest("Invalid input for field/attribute disabled_reason. The reason is too long.")
		}
	}
	m, ok := s.b.State().MemberByName(*req.Host)
	if !ok {
		return nil, rest.NotFoundf("Host '%s' is not found.", *req.Host)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetHostEnabled,
		statedb.SetHostEnabledCmd{ID: m.ID, Disabled: disable, Reason: reason}); err != nil {
		return nil, err
	}
	out := map[string]any{"host": m.Name, "binary": "nova-compute", "status": "enabled"}
	if disable {
		out["status"] = "disabled"
		if reason != "" {
			out["disabled_reason"] = reason
		}
	}
	return map[string]any{"service": out}, nil
}

// ---- availability zones ----

func (s *service) listZones(c *rest.Ctx) (any, error) {
	if err := rest.Check(s.b, c, rest.Read, "", false, "Availability zones"); err != nil {
		return nil, err
	}
	return map[string]any{"availabilityZoneInfo": []map[string]any{
		{"zoneName": "nova", "zoneState": map[string]bool{"available": true}, "hosts": nil},
	}}, nil
}

func (s *service) listZonesDetail(c *rest.Ctx) (any, error) {
	if err := s.requireAdmin(c, "Availability zones"); err != nil {
		return nil, err
	}
	now := s.b.Now().UTC().Format(timeUSG)
	hosts := map[string]any{}
	for _, h := range s.b.Hosts() {
		hosts[h.Name] = map[string]any{"nova-compute": map[string]any{"available": h.Up, "active": !h.Disabled, "updated_at": now}}
	}
	return map[string]any{"availabilityZoneInfo": []map[string]any{
		{"zoneName": "nova", "zoneState": map[string]bool{"available": true}, "hosts": hosts},
	}}, nil
}
