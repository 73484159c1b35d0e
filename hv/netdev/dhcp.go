package netdev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dhcpFilter passes inbound (not PACKET_OUTGOING) unfragmented IPv4/UDP
// frames to port 67 and drops everything else in the kernel.
var dhcpFilter = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0xfffff000 + 4}, // SKF_AD_PKTTYPE
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 10, K: unix.PACKET_OUTGOING},
	{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 12}, // ethertype
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: 8, K: unix.ETH_P_IP},
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 23}, // IP protocol
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: 6, K: unix.IPPROTO_UDP},
	{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 20}, // fragment offset
	{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, Jt: 4, K: 0x1fff},
	{Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: 14}, // X = IP header length
	{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_IND, K: 16},  // UDP destination port
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: 1, K: 67},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

// openDHCPSocket opens the filtered AF_PACKET socket on a tap; it must run in
// the tap's namespace. ETH_P_ALL hooks run before the bridge consumes the
// frame. The filter is attached before binding, so nothing unfiltered queues.
func openDHCPSocket(ifindex int) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, wrap("open packet socket", err)
	}
	prog := unix.SockFprog{Len: uint16(len(dhcpFilter)), Filter: unsafe.SliceData(dhcpFilter)}
	if err = unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err == nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1) // the filter covers older kernels
		all := unix.ETH_P_ALL<<8 | unix.ETH_P_ALL>>8                                // network byte order
		err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(all), Ifindex: ifindex})
	}
	if err != nil {
		unix.Close(fd)
		return nil, wrap("set up packet socket", err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("dhcp:%d", ifindex)), nil // non-blocking: uses the poller
}

// responder answers DHCP for one port on its tap. Its goroutine (run) ends
// when stop closes the socket, or on an unexpected socket error; done is
// closed then.
type responder struct {
	ifindex int
	srcMAC  net.HardwareAddr // the tap's own address, source of replies
	lease   lease
	f       *os.File
	done    chan struct{}
	log     *slog.Logger
}

func (r *responder) run() {
	defer close(r.done)
	buf := make([]byte, 4096)
	for {
		n, err := r.f.Read(buf)
		switch {
		case errors.Is(err, os.ErrClosed):
			return
		case errors.Is(err, unix.ENETDOWN):
			continue // the tap went down; the socket rehooks when it comes up
		case err != nil:
			r.log.Warn("dhcp responder stopped", "err", err)
			return
		}
		req, err := parseFrame(buf[:n])
		if err != nil {
			continue
		}
		if reply := buildReply(req, r.lease); reply != nil {
			dstMAC, dstIP := replyDst(req, reply)
			_, err := r.f.Write(encodeFrame(dstMAC, r.srcMAC, r.lease.ServerID, dstIP, reply.ToBytes()))
			r.log.Debug("dhcp", "request", req.MessageType(), "reply", reply.MessageType(), "ip", r.lease.IP, "err", err)
		}
	}
}

func (r *responder) stop() {
	r.f.Close()
	<-r.done
}

// syncDHCP makes the running responders match d's DHCP ports that have a
// tap: it stops those no longer wanted, changed, dead or whose tap was
// (re)created, and starts the missing ones.
func (m *Manager) syncDHCP(ctx context.Context, d Desired, host hostLinks, touched map[string]bool, st *Stats) error {
	want := map[string]lease{}
	for _, n := range d.Networks {
		for _, p := range n.Ports {
			if p.DHCP {
				want[p.Tap] = leaseFor(p, networkMTU(n), m.leaseTime)
			}
		}
	}
	for _, n := range d.Providers {
		for _, p := range n.Ports {
			if p.DHCP {
				// The gateway is a real router on the LAN, maybe with a
				// DHCP server of its own: a server identifier of its
				// address would make each server take the other's
				// requests for its own (and NAK them).
				l := leaseFor(p, providerMTUOf(n), m.leaseTime)
				l.ServerID = noGatewayServerID
				want[p.Tap] = l
			}
		}
	}
	for tap, r := range m.dhcp {
		select {
		case <-r.done:
			touched[tap] = true // dead: restart it
		default:
		}
		if l, ok := want[tap]; !ok || touched[tap] || r.ifindex != host.index[tap] || !reflect.DeepEqual(l, r.lease) {
			r.stop()
			delete(m.dhcp, tap)
			st.DHCPStopped++
		}
	}
	var errs []error
	for _, tap := range sortedKeys(want) {
		idx, ok := host.index[tap]
		if _, running := m.dhcp[tap]; running || !ok || ctx.Err() != nil {
			continue // running, or not plumbed (Apply failed: the next one retries)
		}
		var f *os.File
		if err := m.nl.inNS(func() (err error) { f, err = openDHCPSocket(idx); return err }); err != nil {
			errs = append(errs, fmt.Errorf("dhcp on %s: %w", tap, err))
			continue
		}
		r := &responder{ifindex: idx, srcMAC: host.mac[tap], lease: want[tap], f: f,
			done: make(chan struct{}), log: m.log.With("tap", tap)}
		m.dhcp[tap] = r
		st.DHCPStarted++
		go r.run()
	}
	return errors.Join(errs...)
}

func (m *Manager) stopAllDHCP() {
	for tap, r := range m.dhcp {
		r.stop()
		delete(m.dhcp, tap)
	}
}
