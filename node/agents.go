package node

import "context"

// AgentOptions configure the per-host agents (hypervisor, networking,
// storage).
type AgentOptions struct{}

// runAgents runs this host's reconcilers until ctx ends.
func (n *Node) runAgents(ctx context.Context) {}
