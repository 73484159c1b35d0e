package agenttest

import (
	"bufio"
	"context"
	"fmt"
	"net"

	"github.com/peerstack/peerstack/node/agent"
)

// OpenConsole attaches to a running VM's serial console: a line-echoing
// shell that answers every line typed (ended by CR) with
// "you typed: <line>".
func (h *Hypervisor) OpenConsole(_ context.Context, id string) (net.Conn, error) {
	h.mu.Lock()
	v, ok := h.vms[id]
	running := ok && v.State == agent.VMRunning
	h.mu.Unlock()
	if !running {
		return nil, fmt.Errorf("vm %s not running", id)
	}
	client, guest := net.Pipe()
	go func() {
		defer guest.Close()
		r := bufio.NewReader(guest)
		var line []byte
		for {
			b, err := r.ReadByte()
			if err != nil {
				return
			}
			if b != '\r' {
				line = append(line, b)
				if _, err := guest.Write([]byte{b}); err != nil {
					return
				}
				continue
			}
			if _, err := fmt.Fprintf(guest, "\r\nyou typed: %s\r\n# ", line); err != nil {
				return
			}
			line = line[:0]
		}
	}()
	return client, nil
}
