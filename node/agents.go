package node

import (
	"context"
	"fmt"
)

// AgentOptions configure the per-host agents (hypervisor, networking,
// storage).
type AgentOptions struct{}

// runAgents runs this host's reconcilers until ctx ends.
func (n *Node) runAgents(ctx context.Context) {}

// localConsole returns the tail of a local instance's serial console log.
func (n *Node) localConsole(ctx context.Context, instanceID string, length int) (string, error) {
	return "", fmt.Errorf("console of %s: no hypervisor on this host", instanceID)
}
