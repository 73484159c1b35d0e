package node

import (
	"crypto/rand"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/identity"
	"github.com/peerstack/peerstack/node/membership"
)

// bootstrapCommand builds the command that seeds a new cluster's state.
func (n *Node) bootstrapCommand(clusterID, caPEM, caKeyPEM string, gossipKey []byte, password string) (*statedb.Command, error) {
	now := n.Now()
	hash, err := identity.HashPassword(password, n.cfg.BcryptCost)
	if err != nil {
		return nil, err
	}
	key, err := identity.NewKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	roles := []statedb.Role{
		{ID: newKeystoneID(), Name: "admin", Description: "Administrator of the whole cloud"},
		{ID: newKeystoneID(), Name: "member", Description: "Read and write in a project"},
		{ID: newKeystoneID(), Name: "reader", Description: "Read only in a project"},
	}
	project := statedb.Project{ID: newKeystoneID(), Name: "admin", DomainID: statedb.DefaultDomainID,
		Description: "Bootstrap project for initializing the cloud.", Enabled: true, Tags: []string{}, CreatedAt: now}
	admin := statedb.User{ID: newKeystoneID(), Name: "admin", DomainID: statedb.DefaultDomainID, PasswordHash: hash,
		Enabled: true, DefaultProjectID: project.ID, CreatedAt: now}
	b := statedb.BootstrapCmd{
		Config: statedb.ClusterConfig{
			// The CA key and the gossip key stay on the members' disks
			// (node/certs.go), out of the log, snapshots and backups.
			ClusterID: clusterID, CACertPEM: caPEM, CreatedAt: now,
			Settings: statedb.Settings{
				Voters: n.cfg.Voters, TokenLifetime: time.Hour, LockoutAttempts: 6, LockoutDuration: 5 * time.Minute,
				PublicURL: n.cfg.PublicURL, JoinTokenTimeout: time.Hour, Storage: n.cfg.Storage,
				Ratios: statedb.Ratios{CPU: 4, RAM: 1, Disk: 1}, Weigher: "spread", MTU: 1450, ImageCopies: 2,
				QuotasEnforced: true,
			},
		},
		Member: statedb.Member{ID: n.id.NodeID, Name: n.id.Name, APIAddr: n.id.APIAddr, RaftAddr: n.id.RaftAddr,
			GossipAddr: n.id.GossipAddr, JoinedAt: now, Version: Version},
		Project:    project,
		Admin:      admin,
		Roles:      roles,
		Assignment: statedb.Assignment{ProjectID: project.ID, UserID: admin.ID, RoleID: roles[0].ID},
		SigningKey: statedb.SigningKey{ID: key.ID, Secret: key.Secret, CreatedAt: now},
		Flavors:    defaultFlavors(now),
	}
	return statedb.NewCommand(statedb.CmdBootstrap, uuid.NewString(), now, b)
}

// defaultFlavors are Nova's classic sizes plus m1.tiny for small guests.
func defaultFlavors(now time.Time) []statedb.Flavor {
	mk := func(id, name string, vcpus, ram, disk int) statedb.Flavor {
		return statedb.Flavor{ID: id, Name: name, VCPUs: vcpus, RAMMB: ram, DiskGB: disk, RxTxFactor: 1, Public: true, CreatedAt: now}
	}
	return []statedb.Flavor{
		mk("1", "m1.tiny", 1, 128, 1),
		mk("2", "m1.small", 1, 2048, 20),
		mk("3", "m1.medium", 2, 4096, 40),
		mk("4", "m1.large", 4, 8192, 80),
		mk("5", "m1.xlarge", 8, 16384, 160),
	}
}

// writeClientFiles writes ca.pem and clouds.yaml for the admin into the
// data dir, so `openstack --os-cloud peerstack` works with no edits.
func (n *Node) writeClientFiles(password string) error {
	caPath := filepath.Join(n.cfg.DataDir, "ca.pem")
	if err := membership.WriteFileAtomic(caPath, []byte(n.caPEM), 0o644); err != nil {
		return err
	}
	absCA, _ := filepath.Abs(caPath)
	authURL := n.cfg.PublicURL
	if authURL == "" {
		authURL = "https://" + n.id.APIAddr
	}
	clouds := fmt.Sprintf(`# Written by peerstack at bootstrap. Use with:
#   export OS_CLIENT_CONFIG_FILE=%s OS_CLOUD=peerstack
clouds:
  peerstack:
    auth:
      auth_url: %s/identity
      username: admin
      password: %q
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    cacert: %s
`, filepath.Join(mustAbs(n.cfg.DataDir), "clouds.yaml"), authURL, password, absCA)
	return membership.WriteFileAtomic(filepath.Join(n.cfg.DataDir, "clouds.yaml"), []byte(clouds), 0o600)
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func hostOfURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Hostname()
}

// CloudsYAML is the path of the admin clouds.yaml in the data dir.
func (n *Node) CloudsYAML() string { return filepath.Join(mustAbs(n.cfg.DataDir), "clouds.yaml") }
