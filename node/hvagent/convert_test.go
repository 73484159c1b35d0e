package hvagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/node/agent"
)

// fill sets every field of the struct v points to a non-zero value.
func fill(t *testing.T, v reflect.Value) {
	t.Helper()
	v = v.Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		if !f.CanSet() {
			continue
		}
		switch x := f.Addr().Interface().(type) {
		case *net.IP:
			*x = net.IPv4(192, 0, 2, 7)
		case *net.HardwareAddr:
			*x = net.HardwareAddr{0xfa, 0x16, 0x3e, 0, 0, 1}
		case *netip.Prefix:
			*x = netip.MustParsePrefix("192.0.2.0/24")
		case *netip.Addr:
			*x = netip.MustParseAddr("192.0.2.9")
		default:
			switch f.Kind() {
			case reflect.String:
				f.SetString("x")
			case reflect.Bool:
				f.SetBool(true)
			case reflect.Int, reflect.Int32, reflect.Int64, reflect.Int16, reflect.Int8:
				f.SetInt(7)
			case reflect.Uint, reflect.Uint32, reflect.Uint64, reflect.Uint16, reflect.Uint8:
				f.SetUint(7)
			case reflect.Slice:
				s := reflect.MakeSlice(f.Type(), 1, 1)
				if e := s.Index(0); e.Kind() == reflect.Struct {
					fill(t, e.Addr())
				} else {
					switch e.Interface().(type) {
					case net.IP:
						e.Set(reflect.ValueOf(net.IPv4(192, 0, 2, 8)))
					case net.IPNet:
						e.Set(reflect.ValueOf(net.IPNet{IP: net.IPv4(192, 0, 2, 0), Mask: net.CIDRMask(24, 32)}))
					case string:
						e.SetString("x")
					}
				}
				f.Set(s)
			case reflect.Map:
				f.Set(reflect.MakeMap(f.Type()))
				if f.Type().Key().Kind() == reflect.String && f.Type().Elem().Kind() == reflect.String {
					f.SetMapIndex(reflect.ValueOf("x"), reflect.ValueOf("y"))
				}
			case reflect.Pointer:
				p := reflect.New(f.Type().Elem())
				if p.Elem().Kind() == reflect.Struct {
					fill(t, p)
				}
				f.Set(p)
			case reflect.Struct:
				fill(t, f.Addr())
			}
		}
	}
}

// lost lists the fields of from, at any depth (structs, pointers to
// them, the first element of slices of them), whose namesake in to is
// still zero.
func lost(path string, from, to reflect.Value) []string {
	for from.Kind() == reflect.Pointer && to.Kind() == reflect.Pointer {
		if from.IsNil() || to.IsNil() {
			if !from.IsNil() {
				return []string{path}
			}
			return nil
		}
		from, to = from.Elem(), to.Elem()
	}
	if from.Kind() == reflect.Slice && to.Kind() == reflect.Slice && from.Type().Elem().Kind() == reflect.Struct &&
		to.Type().Elem().Kind() == reflect.Struct {
		if from.Len() == 0 {
			return nil
		}
		if to.Len() == 0 {
			return []string{path}
		}
		return lost(path+"[0]", from.Index(0), to.Index(0))
	}
	// The project's own structs are walked; others (netip.Prefix) are values.
	if from.Kind() != reflect.Struct || to.Kind() != reflect.Struct || !strings.HasPrefix(from.Type().PkgPath(), "github.com/peerstack/") {
		if to.IsZero() && !from.IsZero() {
			return []string{path}
		}
		return nil
	}
	var out []string
	for i := range from.NumField() {
		name := from.Type().Field(i).Name
		if g := to.FieldByName(name); g.IsValid() {
			out = append(out, lost(path+"."+name, from.Field(i), g)...)
		}
	}
	return out
}

// Every field the agent fills that the driver has a namesake for makes it
// across, at every depth: a field added to both but not to the adapter
// would be dropped silently.
func TestAdaptersCarryEveryField(t *testing.T) {
	var p agent.NetPort
	fill(t, reflect.ValueOf(&p))
	if l := lost("NetPort", reflect.ValueOf(p), reflect.ValueOf(toNetdevPort(p))); len(l) > 0 {
		t.Errorf("netdev lost %v", l)
	}
	var nd agent.NetDesired
	fill(t, reflect.ValueOf(&nd))
	if len(nd.Networks) != 1 || len(nd.Providers) != 1 || len(nd.Networks[0].Ports) != 1 {
		t.Fatalf("filled desired = %+v", nd)
	}
	if l := lost("NetDesired", reflect.ValueOf(nd), reflect.ValueOf(toNetdev(nd))); len(l) > 0 {
		t.Errorf("netdev lost %v", l)
	}

	var fd agent.FirewallDesired
	fill(t, reflect.ValueOf(&fd))
	if len(fd.Ports) != 1 || len(fd.Ports[0].Rules) != 1 || len(fd.Ports[0].Pairs) != 1 {
		t.Fatalf("filled firewall desired = %+v", fd)
	}
	if l := lost("FirewallDesired", reflect.ValueOf(fd), reflect.ValueOf(toFirewall(fd))); len(l) > 0 {
		t.Errorf("firewall lost %v", l)
	}

	var cd agent.ConfigDrive
	fill(t, reflect.ValueOf(&cd))
	cd.NetworkData = map[string]any{"links": []any{}}
	if l := lost("ConfigDrive", reflect.ValueOf(cd), reflect.ValueOf(toQEMUConfigDrive(cd))); len(l) > 0 {
		t.Errorf("config drive lost %v", l)
	}

	var rd agent.RoutingDesired
	fill(t, reflect.ValueOf(&rd))
	if len(rd.Routers) != 1 || rd.Routers[0].Gateway == nil || len(rd.Routers[0].Interfaces) != 1 {
		t.Fatalf("filled routing desired = %+v", rd)
	}
	if l := lost("RoutingDesired", reflect.ValueOf(rd), reflect.ValueOf(toRouter(rd))); len(l) > 0 {
		t.Errorf("router lost %v", l)
	}
}

// Without a device manager every plumbing fails as unavailable, with the
// reason; a hypervisor that could not start fails every change with its
// cause and lists no VMs.
func TestUnavailableDrivers(t *testing.T) {
	cause := errors.New("no CAP_NET_ADMIN")
	_, err := NewNetwork(nil, cause).Apply(context.Background(), agent.NetDesired{})
	if !errors.Is(err, agent.ErrNetworkUnavailable) || !strings.Contains(fmt.Sprint(err), cause.Error()) {
		t.Fatalf("Apply without a manager = %v; want ErrNetworkUnavailable and the cause", err)
	}
	b := Broken{Err: errors.New("qemu-system-x86_64: not found")}
	if err := b.Start(context.Background(), agent.VMSpec{}); err == nil || !errors.Is(err, b.Err) {
		t.Fatalf("Start on a broken hypervisor = %v; want the cause", err)
	}
	if vms, err := b.List(context.Background()); err != nil || len(vms) != 0 {
		t.Fatalf("List = %v, %v; want none", vms, err)
	}
	var _ agent.Hypervisor = b
}

// The routing desired state handed to hv/router does not share its
// protected prefixes with the agent's: Apply appends the resolved storage
// servers to it and sorts it, and the agent keeps what it passed as the
// record of what it applied (a shared array would change that record, so
// every later sync would see a change).
func TestToRouterCopiesProtected(t *testing.T) {
	a, b := netip.MustParsePrefix("192.0.2.9/32"), netip.MustParsePrefix("192.0.2.1/32")
	prot := make([]netip.Prefix, 1, 4)
	prot[0] = a
	d := agent.RoutingDesired{Protected: prot}
	out := toRouter(d)
	out.Protected = append(out.Protected, b)
	out.Protected[0] = b
	if got := prot[:2]; got[0] != a || got[1].IsValid() {
		t.Fatalf("the agent's protected prefixes became %v; want [%v] untouched", got, a)
	}
}
