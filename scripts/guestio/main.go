// Command guestio is the test guest's disk benchmark (built into the guest
// image by scripts/build-guest-image.sh): sequential O_DIRECT writes or
// reads of a block device in fixed-size requests, one in flight, from one
// buffer filled once — as qemu-io and fio do — so the figure is the disk
// path's and not the guest CPU's cost of producing data (dd if=/dev/zero
// clears every block, which under TCG costs as much as the write itself).
//
//	guestio write|read DEVICE BYTES [BLOCK]
//	guestio log DEVICE OFFSET [INTERVAL] [SLOTS]
//
// write and read print "guestio <op> <device> <bytes> <block> <seconds>"
// on success; a write ends with fdatasync, inside the timed span. log is
// the host-failure tests' single-writer log (log.go).
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "guestio:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "log" {
		return runLog(args[1:])
	}
	if len(args) < 3 || len(args) > 4 {
		return errors.New("usage: guestio write|read DEVICE BYTES [BLOCK] | guestio log DEVICE OFFSET [INTERVAL] [SLOTS]")
	}
	op, dev := args[0], args[1]
	total, err := strconv.ParseInt(args[2], 10, 64)
	if err != nil || total <= 0 {
		return fmt.Errorf("bytes %q: want a positive integer", args[2])
	}
	block := int64(1 << 20)
	if len(args) == 4 {
		if block, err = strconv.ParseInt(args[3], 10, 64); err != nil || block <= 0 || block%4096 != 0 {
			return fmt.Errorf("block %q: want a positive multiple of 4096", args[3])
		}
	}
	if total%block != 0 {
		return fmt.Errorf("bytes %d is not a multiple of the block %d", total, block)
	}
	flags := syscall.O_DIRECT
	switch op {
	case "write":
		flags |= syscall.O_WRONLY
	case "read":
		flags |= syscall.O_RDONLY
	default:
		return fmt.Errorf("operation %q: want write or read", op)
	}
	fd, err := syscall.Open(dev, flags, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer syscall.Close(fd)
	// O_DIRECT needs an aligned buffer: anonymous mappings are page-aligned.
	buf, err := syscall.Mmap(-1, 0, int(block), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	for i := range buf {
		buf[i] = 0xab
	}
	start := time.Now()
	for off := int64(0); off < total; off += block {
		var n int
		if op == "write" {
			n, err = syscall.Pwrite(fd, buf, off)
		} else {
			n, err = syscall.Pread(fd, buf, off)
		}
		if err != nil {
			return fmt.Errorf("%s %s at %d: %w", op, dev, off, err)
		}
		if int64(n) != block {
			return fmt.Errorf("%s %s at %d: short transfer of %d bytes", op, dev, off, n)
		}
	}
	if op == "write" {
		if err := syscall.Fdatasync(fd); err != nil {
			return fmt.Errorf("fdatasync %s: %w", dev, err)
		}
	}
	el := time.Since(start)
	fmt.Printf("guestio %s %s %d %d %.9f\n", op, dev, total, block, el.Seconds())
	return nil
}
