package nodetest

import (
	"encoding/json"
	"os/exec"
	"testing"
)

// sdkQuotaScript drives the quota calls of openstacksdk's cloud layer and
// proxies that the client installed here has no command for: usage
// (Nova's detail resource, Neutron details, Cinder ?usage=True) and delete, for
// all three services, then prints what it read as JSON.
const sdkQuotaScript = `
import json, sys, openstack
conn = openstack.connect(cloud="peerstack")
proj = conn.get_project("admin")
out = {}
conn.set_compute_quotas(proj.id, instances=4, cores=6)
conn.set_network_quotas(proj.id, network=3, port=9)
conn.set_volume_quotas(proj.id, volumes=2, gigabytes=7)
net = conn.create_network("sdkq")
conn.create_port(net.id, name="sdkq-p")
conn.block_storage.create_volume(size=2, name="sdkq-v")
conn.compute.create_server_group(name="sdkq-g", policies=["anti-affinity"])
cq = conn.compute.get_quota_set(proj.id)
# This openstacksdk asks Nova for usage with ?usage=True, which Nova
# ignores; Nova's usage is the detail resource (what newer clients read).
cd = conn.compute.get("/os-quota-sets/%s/detail" % proj.id).json()["quota_set"]
out["compute"] = {"instances": cq.instances, "cores": cq.cores, "groups_used": cd["server_groups"]["in_use"]}
nq = conn.get_network_quotas(proj.id, details=True)
out["network"] = {"network": nq["network"], "port": nq["port"]}
bq = conn.block_storage.get_quota_set(proj.id, usage=True)
out["volume"] = {"volumes": bq.volumes, "gigabytes": bq.gigabytes, "usage": bq.usage}
conn.delete_compute_quotas(proj.id)
conn.delete_network_quotas(proj.id)
conn.delete_volume_quotas(proj.id)
out["after"] = {"instances": conn.get_compute_quotas(proj.id).instances,
                "network": conn.get_network_quotas(proj.id)["network"],
                "volumes": conn.get_volume_quotas(proj.id).volumes}
print(json.dumps(out))
`

// TestQuotaOpenStackSDK: openstacksdk's cloud layer and proxies set,
// read with usage, and delete the quotas of all three services.
func TestQuotaOpenStackSDK(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import openstack").Run(); err != nil {
		t.Fatalf("openstacksdk is required (python3-openstacksdk): %v", err)
	}
	c := NewCluster(t, 2, Options{Quotas: true})
	o := newCPCLI(t, c, c.Follower())
	out := runClient(t, o.env, "/usr/bin/python3", "-c", sdkQuotaScript)
	var got struct {
		Compute struct {
			Instances, Cores int
			GroupsUsed       *int `json:"groups_used"`
		}
		Network map[string]struct {
			Limit int `json:"limit"`
			Used  int `json:"used"`
		}
		Volume struct {
			Volumes, Gigabytes int
			Usage              map[string]int
		}
		After struct {
			Instances, Network, Volumes int
		}
	}
	if err := json.Unmarshal([]byte(lastLine(out)), &got); err != nil {
		t.Fatalf("sdk output %q: %v", out, err)
	}
	if got.Compute.Instances != 4 || got.Compute.Cores != 6 || got.Compute.GroupsUsed == nil || *got.Compute.GroupsUsed != 1 {
		t.Errorf("compute quota with usage = %+v", got.Compute)
	}
	// The network quota's details: the set limits and what is used (one
	// network; one port).
	if n, p := got.Network["network"], got.Network["port"]; n.Limit != 3 || n.Used != 1 || p.Limit != 9 || p.Used != 1 {
		t.Errorf("network quota details = %+v", got.Network)
	}
	if got.Volume.Volumes != 2 || got.Volume.Gigabytes != 7 || got.Volume.Usage["volumes"] != 1 || got.Volume.Usage["gigabytes"] != 2 {
		t.Errorf("volume quota with usage = %+v", got.Volume)
	}
	// Deleted: back to the defaults.
	if got.After.Instances != 10 || got.After.Network != 100 || got.After.Volumes != 10 {
		t.Errorf("after delete = %+v, want the defaults 10/100/10", got.After)
	}
}
