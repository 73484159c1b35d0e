package agenttest

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/node/agent"
)

// Network is a recording fake of agent.Network: Apply stores the desired
// state (the "host" then has exactly that). It reports one write for an
// Apply that changed the host: a desired state other than the last, or
// the first Apply after Drift.
type Network struct {
	mu      sync.Mutex
	applies []agent.NetDesired
	fail    error
	drifted bool
}

// Apply implements agent.Network.
func (n *Network) Apply(ctx context.Context, d agent.NetDesired) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fail != nil {
		return 0, n.fail
	}
	writes := 0
	if k := len(n.applies); k == 0 || n.drifted || !reflect.DeepEqual(n.applies[k-1], d) {
		writes = 1
	}
	n.drifted = false
	n.applies = append(n.applies, d)
	return writes, nil
}

// Drift changes the "host" behind the agent's back: the next Apply has
// to repair it.
func (n *Network) Drift() {
	n.mu.Lock()
	n.drifted = true
	n.mu.Unlock()
}

// TapName implements agent.Network: "tap" and 10 characters of the id.
func (n *Network) TapName(portID string) string {
	s := strings.ReplaceAll(portID, "-", "")
	if len(s) > 10 {
		s = s[:10]
	}
	return "tap" + s
}

// Fail makes Apply fail with err (nil: succeed again).
func (n *Network) Fail(err error) {
	n.mu.Lock()
	n.fail = err
	n.mu.Unlock()
}

// Last returns the last applied desired state.
func (n *Network) Last() (agent.NetDesired, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.applies) == 0 {
		return agent.NetDesired{}, false
	}
	return n.applies[len(n.applies)-1], true
}

// Applies is the number of successful Apply calls.
func (n *Network) Applies() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.applies)
}

// VTEPs maps host ids to underlay addresses. It satisfies agent.VTEPs.
type VTEPs struct {
	mu sync.Mutex
	m  map[string]net.IP
}

// NewVTEPs returns a resolver with fixed addresses (host id → IP).
func NewVTEPs(m map[string]string) *VTEPs {
	v := &VTEPs{m: map[string]net.IP{}}
	for h, ip := range m {
		v.Set(h, ip)
	}
	return v
}

// Set sets a host's address.
func (v *VTEPs) Set(host, ip string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[string]net.IP{}
	}
	v.m[host] = net.ParseIP(ip).To4()
}

// VTEP implements agent.VTEPs.
func (v *VTEPs) VTEP(host string) net.IP {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m[host]
}

// Volumes is a recording fake of agent.Volumes: files are entries in a
// map, path → size in GB.
type Volumes struct {
	mu    sync.Mutex
	files map[string]int
	from  map[string]string // path → image path it was made from
	fail  map[string]error  // op → error
	calls []string
}

// NewVolumes returns an empty fake store.
func NewVolumes() *Volumes {
	return &Volumes{files: map[string]int{}, from: map[string]string{}, fail: map[string]error{}}
}

// Fail makes op (Create, Delete, Extend) fail with err (nil clears it).
func (s *Volumes) Fail(op string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.fail, op)
	} else {
		s.fail[op] = err
	}
}

// Create implements agent.Volumes.
func (s *Volumes) Create(ctx context.Context, v *statedb.Volume, image *agent.Disk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "Create:"+v.ID)
	if err := s.fail["Create"]; err != nil {
		return err
	}
	if _, ok := s.files[v.Path]; ok {
		return fmt.Errorf("volume file %s exists", v.Path)
	}
	s.files[v.Path] = v.SizeGB
	if image != nil {
		s.from[v.Path] = image.Path
	}
	return nil
}

// Path implements agent.Volumes: /fake/volumes/<file name>.
func (s *Volumes) Path(v *statedb.Volume) (string, error) {
	return "/fake/volumes/" + v.FileName(), nil
}

// Delete implements agent.Volumes.
func (s *Volumes) Delete(ctx context.Context, v *statedb.Volume) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "Delete:"+v.ID)
	if err := s.fail["Delete"]; err != nil {
		return err
	}
	delete(s.files, v.Path)
	delete(s.from, v.Path)
	return nil
}

// Extend implements agent.Volumes.
func (s *Volumes) Extend(ctx context.Context, v *statedb.Volume) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "Extend:"+v.ID)
	if err := s.fail["Extend"]; err != nil {
		return err
	}
	if _, ok := s.files[v.Path]; !ok {
		return fmt.Errorf("volume file %s not found", v.Path)
	}
	s.files[v.Path] = v.SizeGB
	return nil
}

// File returns the size of the file at path and the image it came from.
func (s *Volumes) File(path string) (sizeGB int, fromImage string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sizeGB, ok = s.files[path]
	return sizeGB, s.from[path], ok
}

// Calls returns the operations so far as "Op:volume-id".
func (s *Volumes) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// Images is a fake agent.ImageSource: image id → file.
type Images struct {
	mu   sync.Mutex
	m    map[string]agent.Disk
	hits int
	held int // Image calls whose release has not been called
}

// NewImages returns a source with the given images (id → path, qcow2).
func NewImages(m map[string]string) *Images {
	im := &Images{m: map[string]agent.Disk{}}
	for id, p := range m {
		im.Add(id, p, "qcow2")
	}
	return im
}

// Add makes image id available at path in format.
func (im *Images) Add(id, path, format string) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.m == nil {
		im.m = map[string]agent.Disk{}
	}
	im.m[id] = agent.Disk{Path: path, Format: format}
}

// Image implements agent.ImageSource.
func (im *Images) Image(ctx context.Context, id string) (string, string, func(), error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.hits++
	d, ok := im.m[id]
	if !ok {
		return "", "", nil, fmt.Errorf("image %s not found", id)
	}
	im.held++
	var once sync.Once
	return d.Path, d.Format, func() {
		once.Do(func() {
			im.mu.Lock()
			im.held--
			im.mu.Unlock()
		})
	}, nil
}

// Held is the number of images handed out and not yet released.
func (im *Images) Held() int {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.held
}

// AnyImage is an image source that has every image, as a qcow2 file under
// Dir (default /fake/images) that nobody reads: for fake hypervisors.
type AnyImage struct{ Dir string }

// Image implements agent.ImageSource.
func (a AnyImage) Image(ctx context.Context, id string) (string, string, func(), error) {
	dir := a.Dir
	if dir == "" {
		dir = "/fake/images"
	}
	return dir + "/" + id + ".qcow2", "qcow2", func() {}, nil
}
