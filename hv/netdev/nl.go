package netdev

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nlh is the package's narrow netlink access: one NETLINK_ROUTE handle in
// the target namespace, whose socket timeout bounds every call.
type nlh struct {
	h  *netlink.Handle
	ns netns.NsHandle // target namespace, or netns.None() for the current one
}

// wrap names the operation and maps EPERM/EACCES to ErrPermission.
func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s: %w: %w", op, ErrPermission, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// gone reports a link or FDB entry that no longer exists.
func gone(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// call performs one netlink request after checking ctx.
func call(ctx context.Context, op string, f func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return wrap(op, f())
}

// dump performs a netlink dump, retrying one interrupted by a concurrent change.
func dump[T any](ctx context.Context, op string, f func() ([]T, error)) ([]T, error) {
	var v []T
	err := call(ctx, op, func() (err error) {
		for range 5 {
			if v, err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		return err
	})
	return v, err
}

// ref is a link reference by index, for the handle's Link* calls.
func ref(index int) netlink.Link {
	la := netlink.NewLinkAttrs()
	la.Index = index
	return &netlink.Device{LinkAttrs: la}
}

func (n *nlh) setMaster(index, master int) error {
	if master == 0 {
		return n.h.LinkSetNoMaster(ref(index))
	}
	return n.h.LinkSetMasterByIndex(ref(index), master)
}

func (n *nlh) delLink(ctx context.Context, name string, index int) error {
	return call(ctx, "delete "+name, func() error {
		l := ref(index)
		l.Attrs().Name = name // used when the index is unknown
		if err := n.h.LinkDel(l); !gone(err) {
			return err
		}
		return nil
	})
}

// inNS runs f with the calling OS thread in the target namespace: socket()
// and open("/dev/net/tun") bind to the namespace of the calling thread. f
// runs on a fresh locked goroutine whose thread is never unlocked, so the
// runtime discards it instead of reusing a thread in the wrong namespace.
func (n *nlh) inNS(f func() error) error {
	if !n.ns.IsOpen() {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(n.ns); err != nil {
			errc <- wrap("enter network namespace", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// createTap creates a persistent, single-queue tap without packet
// information and without owner: what `ip tuntap add dev NAME mode tap`
// creates and QEMU's `-netdev tap,ifname=NAME,script=no` attaches to (QEMU
// sets IFF_VNET_HDR itself when it attaches; only multi_queue must match).
// Must run in the target namespace (see inNS).
func createTap(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return wrap("open /dev/net/tun", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_TUN_EXCL)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err == nil {
		err = unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1)
	}
	return wrap("create tap "+name, err)
}
