package nodetest

import (
	"fmt"
	"net"
	"os"
	"sync"
)

// Ports for the Raft and gossip listeners of test hosts. A host that joins
// learns its listeners' ports before it binds them (they travel in the
// join request), so with port 0 the kernel's choice is released and bound
// again moments later: under load another socket, often an outgoing
// connection's ephemeral port, takes it in between. Ports handed out here
// lie below the kernel's ephemeral range (32768 and up), which outgoing
// connections and port-0 listeners never use, and each is handed out once
// per process.
var testPorts struct {
	mu   sync.Mutex
	next int
}

const (
	testPortLow  = 20000
	testPortHigh = 32000
)

// freeTestPort returns a port below the ephemeral range that is free for
// TCP and UDP on 127.0.0.1 right now.
func freeTestPort() (int, error) {
	testPorts.mu.Lock()
	defer testPorts.mu.Unlock()
	if testPorts.next == 0 {
		// Processes started together (two test binaries) start apart.
		testPorts.next = testPortLow + os.Getpid()%((testPortHigh-testPortLow)/2)
	}
	for range testPortHigh - testPortLow {
		p := testPorts.next
		testPorts.next++
		if testPorts.next >= testPortHigh {
			testPorts.next = testPortLow
		}
		if portFree(p) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free port in %d-%d", testPortLow, testPortHigh)
}

func portFree(p int) bool {
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	return pc.Close() == nil
}

// testAddr is 127.0.0.1 with a port from freeTestPort, or port 0 when none
// is left (the kernel chooses, as before).
func testAddr() string {
	p, err := freeTestPort()
	if err != nil {
		return "127.0.0.1:0"
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}
