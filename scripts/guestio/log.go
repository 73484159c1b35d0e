package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The single-writer log (guestio log): the host-failure tests run it in a
// guest whose disk is a shared volume, restart the guest on another host
// and read the disk afterwards. Every record is one 512-byte slot at
// OFFSET + slot*512, written with O_DIRECT and fdatasync:
//
//	PSLOG slot=<slot> boot=<kernel boot id> seq=<n>\n, zero padded
//
// slot is the record's own position, seq counts this boot's records from
// 0. A writer starts after the last record on the disk (a restarted guest
// continues the log), and before each append it reads back its previous
// record and the slot it is about to write: another writer's record in
// either place means two writers share the disk, which it prints as
// "guestio log COLLISION …" before it exits. After each
// record has reached the disk it prints
//
//	guestio log slot=<slot> boot=<id> seq=<n>
//
// so a console shows how far a writer got even if its VM was killed.

// slotSize is one record: one sector.
const slotSize = 512

// scanChunk is how many slots one read of the start-up scan covers.
const scanChunk = 128

// logMagic starts every record.
const logMagic = "PSLOG "

func runLog(args []string) error {
	if len(args) < 2 || len(args) > 4 {
		return errors.New("usage: guestio log DEVICE OFFSET [INTERVAL] [SLOTS]")
	}
	dev := args[0]
	off, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil || off < 0 || off%4096 != 0 {
		return fmt.Errorf("offset %q: want a non-negative multiple of 4096", args[1])
	}
	interval := 100 * time.Millisecond
	if len(args) > 2 {
		if interval, err = time.ParseDuration(args[2]); err != nil || interval <= 0 {
			return fmt.Errorf("interval %q: want a positive duration such as 100ms", args[2])
		}
	}
	slots := int64(1 << 16) // 32 MiB of records: almost two hours at 10 a second
	if len(args) > 3 {
		if slots, err = strconv.ParseInt(args[3], 10, 64); err != nil || slots <= 0 {
			return fmt.Errorf("slots %q: want a positive integer", args[3])
		}
	}
	raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return fmt.Errorf("boot id: %w", err)
	}
	boot := strings.TrimSpace(string(raw))
	fd, err := syscall.Open(dev, syscall.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer syscall.Close(fd)
	// O_DIRECT needs aligned buffers: anonymous mappings are page-aligned.
	scan, err := syscall.Mmap(-1, 0, scanChunk*slotSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	next, err := firstFree(fd, off, slots, scan)
	if err != nil {
		return err
	}
	fmt.Printf("guestio log start dev=%s boot=%s slot=%d\n", dev, boot, next)
	rec, check := scan[:slotSize], scan[slotSize:2*slotSize]
	var last []byte // this writer's previous record
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := int64(0); next < slots; seq, next = seq+1, next+1 {
		if last != nil {
			if err := pread(fd, check, off+(next-1)*slotSize); err != nil {
				return err
			}
			if !bytes.Equal(check, last) {
				return collision(next-1, last, check)
			}
		}
		if err := pread(fd, check, off+next*slotSize); err != nil {
			return err
		}
		if bytes.HasPrefix(check, []byte(logMagic)) {
			return collision(next, nil, check)
		}
		clear(rec)
		copy(rec, fmt.Sprintf("%sslot=%d boot=%s seq=%d\n", logMagic, next, boot, seq))
		if n, err := syscall.Pwrite(fd, rec, off+next*slotSize); err != nil || n != slotSize {
			return fmt.Errorf("write slot %d: %d bytes: %v", next, n, err)
		}
		if err := syscall.Fdatasync(fd); err != nil {
			return fmt.Errorf("fdatasync %s: %w", dev, err)
		}
		last = append(last[:0], rec...)
		fmt.Printf("guestio log slot=%d boot=%s seq=%d\n", next, boot, seq)
		<-tick.C
	}
	return fmt.Errorf("log full after %d slots", slots)
}

// firstFree returns the slot after the last record: the first one that
// does not start with the record magic.
func firstFree(fd int, off, slots int64, buf []byte) (int64, error) {
	for s := int64(0); s < slots; s += scanChunk {
		if err := pread(fd, buf, off+s*slotSize); err != nil {
			return 0, err
		}
		for i := int64(0); i < scanChunk && s+i < slots; i++ {
			if !bytes.HasPrefix(buf[i*slotSize:], []byte(logMagic)) {
				return s + i, nil
			}
		}
	}
	return slots, nil
}

func pread(fd int, buf []byte, at int64) error {
	n, err := syscall.Pread(fd, buf, at)
	if err != nil || n != len(buf) {
		return fmt.Errorf("read at %d: %d bytes: %v", at, n, err)
	}
	return nil
}

// collision reports another writer's record where this writer expected its
// own (want) or an empty slot (want nil); the writer stops.
func collision(slot int64, want, found []byte) error {
	line := func(b []byte) string {
		if i := bytes.IndexAny(b, "\n\x00"); i >= 0 {
			b = b[:i]
		}
		return strconv.Quote(string(b))
	}
	fmt.Printf("guestio log COLLISION slot=%d want=%s found=%s\n", slot, line(want), line(found))
	return fmt.Errorf("slot %d: another writer shares the disk", slot)
}
