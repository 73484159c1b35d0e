package hvagent

import (
	"context"
	"net"
)

// OpenConsole attaches to the serial console of the VM; a console that
// cannot be typed into fails with qemu.ErrConsoleReadOnly.
func (h *QEMU) OpenConsole(ctx context.Context, id string) (net.Conn, error) {
	return h.d.OpenConsole(ctx, id)
}
