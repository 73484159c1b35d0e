package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/peerstack/peerstack/node/membership"
	"github.com/peerstack/peerstack/rest/cluster"
)

// admitter is this host's side of other hosts' joins (node/membership).
func (n *Node) admitter() *membership.Admitter {
	return &membership.Admitter{
		SelfID: n.id.NodeID, SelfName: n.id.Name, State: n.State, Proposer: nodeProposer{n}, Clock: n.clock,
		Members: n.gossip.Members, MaxClockSkew: n.cfg.MaxClockSkew, CertTTL: n.cfg.CertTTL, Secrets: func() (string, []byte, error) { cfg, _ := n.State().Cluster(); return n.files.Secrets(cfg) }, Logger: n.log,
	}
}

// CreateJoinToken records a single-use join token and returns its text
// (cluster.Backend).
func (n *Node) CreateJoinToken(ctx context.Context, ttl time.Duration) (string, time.Time, error) {
	return n.admitter().CreateToken(ctx, ttl, n.id.APIAddr)
}

// Join handles a joining host's request (cluster.Backend).
func (n *Node) Join(ctx context.Context, req cluster.JoinRequest) (*cluster.JoinResponse, error) {
	return n.admitter().Join(ctx, req)
}

// join makes this empty data dir a member of the cluster in cfg.JoinToken.
func (n *Node) join(ctx context.Context) (err error) {
	tok, err := membership.ParseJoinToken(n.cfg.JoinToken)
	if err != nil {
		return err
	}
	ln, err := n.listenAPI()
	if err != nil {
		return err
	}
	raftAddr, err := checkPortFree(n.cfg.RaftAddr, "raft")
	if err != nil {
		ln.Close()
		return err
	}
	gossipAddr, err := checkPortFree(n.cfg.GossipAddr, "gossip")
	if err != nil {
		ln.Close()
		return err
	}
	written := false
	defer func() {
		if err != nil {
			ln.Close()
			n.shutdownParts()
			if written {
				for _, p := range []string{n.files.TLSDir(), filepath.Join(n.cfg.DataDir, "raft"),
					filepath.Join(n.cfg.DataDir, "gossip.key"), identityPath(n.cfg.DataDir)} {
					os.RemoveAll(p)
				}
			}
		}
	}()
	nodeID := uuid.NewString()
	keyPEM, csrPEM, err := membership.NewKeyAndCSR(nodeID)
	if err != nil {
		return err
	}
	// Keep the listeners' ports: with port 0 the OS chose them.
	n.cfg.RaftAddr, n.cfg.GossipAddr = raftAddr, gossipAddr
	req := cluster.JoinRequest{
		TokenID: tok.ID, Secret: tok.Secret, NodeID: nodeID, Name: n.cfg.Name,
		APIAddr:    advertised(n.cfg.AdvertiseAddr, ln.Addr()),
		RaftAddr:   advertised(n.cfg.AdvertiseAddr, mustAddr(raftAddr)),
		GossipAddr: advertised(n.cfg.AdvertiseAddr, mustAddr(gossipAddr)),
		CSR:        csrPEM, Hosts: n.certHosts(), Version: Version,
	}
	resp, err := membership.SendJoin(ctx, tok, req, n.clock, n.cfg.MaxClockSkew, n.log)
	if err != nil {
		return err
	}
	if resp.ClusterID != tok.ClusterID {
		return fmt.Errorf("join: the server belongs to cluster %s, the token to %s", resp.ClusterID, tok.ClusterID)
	}
	written = true
	if err := n.writeSecrets(resp.CACert, resp.Cert, keyPEM, resp.GossipKey); err != nil {
		return err
	}
	if err := n.files.WriteCAKey(resp.CAKey); err != nil {
		return err
	}
	n.id = &identityFile{NodeID: nodeID, Name: n.cfg.Name, ClusterID: resp.ClusterID, Peers: resp.Peers}
	if err := n.startParts(ctx, ln, resp.CACert, resp.Cert, keyPEM, membership.GossipKeys{Keys: [][]byte{resp.GossipKey}}, false); err != nil {
		return err
	}
	if _, err := n.gossip.Join(ctx, resp.Peers); err != nil {
		// The gossip key may have been rotated since the answer: fetch
		// the keys over the internal API and try once more.
		if _, ferr := n.gkeys.Refresh(ctx, tok.Addrs...); ferr != nil {
			return fmt.Errorf("join gossip via %v: %w (fetching the gossip keys: %v)", resp.Peers, err, ferr)
		}
		if _, err := n.gossip.Join(ctx, resp.Peers); err != nil {
			return fmt.Errorf("join gossip via %v: %w", resp.Peers, err)
		}
	}
	if err := saveIdentity(n.cfg.DataDir, n.id); err != nil {
		return err
	}
	n.log.Info("joined cluster", "cluster", resp.ClusterID, "node", nodeID, "name", n.cfg.Name, "api", n.id.APIAddr)
	n.startLoops()
	return nil
}
