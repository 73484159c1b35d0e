package gossip

import (
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Links says which peers this host can reach. Traffic to a peer that is
// not up is dropped as a cut network would drop it: packets vanish,
// connections are refused. A partition needs both sides to agree (each
// drops what it sends), as inbound connections come from ephemeral ports.
type Links interface {
	Up(addr string) bool
}

// linkedTransport is a memberlist transport that drops traffic to and
// from peers whose link is down.
type linkedTransport struct {
	memberlist.NodeAwareTransport
	links   Links
	packets chan *memberlist.Packet
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// newLinkedTransport binds a memberlist network transport (retrying a
// racy dynamic port like memberlist does) and filters it through links.
// It returns the bound port.
func newLinkedTransport(bindAddr string, bindPort int, links Links, logger *log.Logger) (*linkedTransport, int, error) {
	nc := &memberlist.NetTransportConfig{BindAddrs: []string{bindAddr}, BindPort: bindPort, Logger: logger}
	var nt *memberlist.NetTransport
	var err error
	for range 10 {
		if nt, err = memberlist.NewNetTransport(nc); err == nil || bindPort != 0 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("gossip: network transport: %w", err)
	}
	t := &linkedTransport{NodeAwareTransport: nt, links: links, packets: make(chan *memberlist.Packet), done: make(chan struct{})}
	t.wg.Add(1)
	go t.relay()
	return t, nt.GetAutoBindPort(), nil
}

// relay passes on the packets of peers whose link is up.
func (t *linkedTransport) relay() {
	defer t.wg.Done()
	in := t.NodeAwareTransport.PacketCh()
	for {
		select {
		case <-t.done:
			return
		case p := <-in:
			if p.From != nil && !t.links.Up(p.From.String()) {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		}
	}
}

func (t *linkedTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *linkedTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if !t.links.Up(addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *linkedTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if !t.links.Up(a.Addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *linkedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if !t.links.Up(addr) {
		return nil, fmt.Errorf("dial %s: link down", addr)
	}
	return t.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (t *linkedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if !t.links.Up(a.Addr) {
		return nil, fmt.Errorf("dial %s: link down", a.Addr)
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

func (t *linkedTransport) Shutdown() error {
	err := t.NodeAwareTransport.Shutdown()
	t.once.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}
