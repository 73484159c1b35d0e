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

// lost lists the fields of from whose namesake in to is still zero.
func lost(from, to reflect.Value) []string {
	var out []string
	for i := range from.NumField() {
		name := from.Type().Field(i).Name
		g := to.FieldByName(name)
		if g.IsValid() && g.IsZero() {
			out = append(out, name)
		}
	}
	return out
}

// Every field the agent fills that the driver has a namesake for makes it
// across: a field added to both but not to the adapter would be dropped
// silently.
func TestAdaptersCarryEveryField(t *testing.T) {
	var p agent.NetPort
	fill(t, reflect.ValueOf(&p))
	if l := lost(reflect.ValueOf(p), reflect.ValueOf(toNetdevPort(p))); len(l) > 0 {
		t.Errorf("netdev port lost %v", l)
	}
	var seg agent.NetSegment
	fill(t, reflect.ValueOf(&seg))
	var prov agent.NetProvider
	fill(t, reflect.ValueOf(&prov))
	nd := toNetdev(agent.NetDesired{LocalVTEP: net.IPv4(192, 0, 2, 1), Networks: []agent.NetSegment{seg}, Providers: []agent.NetProvider{prov}})
	if len(nd.Networks) != 1 || len(nd.Providers) != 1 || nd.LocalVTEP == nil {
		t.Fatalf("netdev desired = %+v", nd)
	}
	if l := lost(reflect.ValueOf(seg), reflect.ValueOf(nd.Networks[0])); len(l) > 0 {
		t.Errorf("netdev network lost %v", l)
	}
	if l := lost(reflect.ValueOf(prov), reflect.ValueOf(nd.Providers[0])); len(l) > 0 {
		t.Errorf("netdev provider lost %v", l)
	}

	var fp agent.FwPort
	fill(t, reflect.ValueOf(&fp))
	fd := toFirewall(agent.FirewallDesired{Ports: []agent.FwPort{fp}, Verify: true})
	if len(fd.Ports) != 1 || !fd.Verify {
		t.Fatalf("firewall desired = %+v", fd)
	}
	if l := lost(reflect.ValueOf(fp), reflect.ValueOf(fd.Ports[0])); len(l) > 0 {
		t.Errorf("firewall port lost %v", l)
	}
	if len(fd.Ports[0].Rules) != 1 {
		t.Fatalf("firewall rules = %+v", fd.Ports[0].Rules)
	}
	if l := lost(reflect.ValueOf(fp.Rules[0]), reflect.ValueOf(fd.Ports[0].Rules[0])); len(l) > 0 {
		t.Errorf("firewall rule lost %v", l)
	}

	var rt agent.RouterDesired
	fill(t, reflect.ValueOf(&rt))
	rd := toRouter(agent.RoutingDesired{Routers: []agent.RouterDesired{rt}})
	if len(rd.Routers) != 1 {
		t.Fatalf("router desired = %+v", rd)
	}
	if l := lost(reflect.ValueOf(rt), reflect.ValueOf(rd.Routers[0])); len(l) > 0 {
		t.Errorf("router lost %v", l)
	}
}

// Without a device manager every plumbing fails as unavailable, with the
// reason; a hypervisor that could not start fails every change with its
// cause and lists no VMs.
func TestUnavailableDrivers(t *testing.T) {
	cause := errors.New("no CAP_NET_ADMIN")
	err := NewNetwork(nil, cause).Apply(context.Background(), agent.NetDesired{})
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
