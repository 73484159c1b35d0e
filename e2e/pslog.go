package e2e

// The checker of the single-writer log that `guestio log` (scripts/guestio)
// writes on a shared disk: one 512-byte record per slot,
//
//	PSLOG slot=<slot> boot=<guest boot id> seq=<n>\n, zero padded
//
// each writer starting after the last record with seq 0. Read back after a
// failover, the log proves that no two guests wrote the disk at once: the
// records are contiguous, each names its own slot, every boot's records
// form one unbroken run that starts at seq 0, and no boot writes again
// after another took over. Every record a guest printed on its console as
// written must still be on the disk, unchanged: one that is not was
// overwritten by another writer.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const (
	pslogSlot  = 512
	pslogMagic = "PSLOG "
)

// pslogRecord is one record of the log.
type pslogRecord struct {
	Slot int
	Boot string
	Seq  int
}

// pslogRun is one writer's part of the log: the records of one boot.
type pslogRun struct {
	Boot        string
	First, Last int // slots
}

// Records is how many records the run holds.
func (r pslogRun) Records() int { return r.Last - r.First + 1 }

var pslogRE = regexp.MustCompile(`^PSLOG slot=(\d+) boot=([0-9a-f-]+) seq=(\d+)$`)

// checkPSLog parses the log in raw (whole slots from slot 0) and returns
// its records and its runs, or the first sign of two writers.
func checkPSLog(raw []byte) ([]pslogRecord, []pslogRun, error) {
	var recs []pslogRecord
	var runs []pslogRun
	seen := map[string]int{} // boot → the run it wrote
	end := -1
	for i := 0; (i+1)*pslogSlot <= len(raw); i++ {
		slot := raw[i*pslogSlot : (i+1)*pslogSlot]
		if !bytes.HasPrefix(slot, []byte(pslogMagic)) {
			if end < 0 {
				end = i
			}
			if len(bytes.Trim(slot, "\x00")) > 0 && !bytes.HasPrefix(slot, []byte("PSLOG")) {
				return nil, nil, fmt.Errorf("slot %d holds something else than a record: %q", i, firstLine(slot))
			}
			continue
		}
		if end >= 0 {
			return nil, nil, fmt.Errorf("record at slot %d after the end of the log at slot %d: %q", i, end, firstLine(slot))
		}
		m := pslogRE.FindStringSubmatch(firstLine(slot))
		if m == nil {
			return nil, nil, fmt.Errorf("slot %d: malformed record %q", i, firstLine(slot))
		}
		n, _ := strconv.Atoi(m[1])
		seq, _ := strconv.Atoi(m[3])
		r := pslogRecord{Slot: n, Boot: m[2], Seq: seq}
		if r.Slot != i {
			return nil, nil, fmt.Errorf("slot %d holds the record of slot %d (%s)", i, r.Slot, firstLine(slot))
		}
		if len(runs) == 0 || runs[len(runs)-1].Boot != r.Boot {
			if k, ok := seen[r.Boot]; ok {
				return nil, nil, fmt.Errorf("two writers: boot %s writes slot %d after boot %s took over at slot %d",
					r.Boot, i, runs[k+1].Boot, runs[k+1].First)
			}
			if r.Seq != 0 {
				return nil, nil, fmt.Errorf("two writers: boot %s's first record on the disk (slot %d) is its seq %d; its earlier ones were overwritten",
					r.Boot, i, r.Seq)
			}
			seen[r.Boot] = len(runs)
			runs = append(runs, pslogRun{Boot: r.Boot, First: i, Last: i})
		} else {
			prev := recs[len(recs)-1]
			if r.Seq != prev.Seq+1 {
				return nil, nil, fmt.Errorf("two writers: boot %s's seq jumps from %d (slot %d) to %d (slot %d)",
					r.Boot, prev.Seq, prev.Slot, r.Seq, i)
			}
			runs[len(runs)-1].Last = i
		}
		recs = append(recs, r)
	}
	if end < 0 && len(recs) > 0 {
		return nil, nil, fmt.Errorf("the log fills all %d slots read: it may go on past them (a region too small for the run)", len(recs))
	}
	return recs, runs, nil
}

func firstLine(b []byte) string {
	if i := bytes.IndexAny(b, "\n\x00"); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

var pslogClaimRE = regexp.MustCompile(`guestio log slot=(\d+) boot=([0-9a-f-]+) seq=(\d+)`)

// pslogClaims are the records a console says its guest wrote (each line
// is printed once the record reached the disk).
func pslogClaims(console string) []pslogRecord {
	var out []pslogRecord
	for _, m := range pslogClaimRE.FindAllStringSubmatch(console, -1) {
		n, _ := strconv.Atoi(m[1])
		seq, _ := strconv.Atoi(m[3])
		out = append(out, pslogRecord{Slot: n, Boot: m[2], Seq: seq})
	}
	return out
}

var pslogStartRE = regexp.MustCompile(`guestio log start dev=(\S+) boot=([0-9a-f-]+)`)

// pslogStart is a writer's start line: the device it writes and its boot.
type pslogStart struct{ Dev, Boot string }

// pslogStarts are the writers a console shows starting, in order.
func pslogStarts(console string) []pslogStart {
	var out []pslogStart
	for _, m := range pslogStartRE.FindAllStringSubmatch(console, -1) {
		out = append(out, pslogStart{Dev: m[1], Boot: m[2]})
	}
	return out
}

// pslogBoots are the boot ids of the writers a console shows starting, in
// order.
func pslogBoots(console string) []string {
	var out []string
	for _, s := range pslogStarts(console) {
		out = append(out, s.Boot)
	}
	return out
}

// checkPSClaims checks the consoles (by name) against the records on the
// disk: every writer wrote the boot disk, no writer saw another's record
// (COLLISION), and every record a console claims is on the disk unchanged.
func checkPSClaims(recs []pslogRecord, consoles map[string]string) error {
	for name, c := range consoles {
		for _, st := range pslogStarts(c) {
			if st.Dev != pslogBootDisk {
				return fmt.Errorf("console %s: boot %s wrote its log on %s, not on the boot disk %s", name, st.Boot, st.Dev, pslogBootDisk)
			}
		}
		if i := strings.Index(c, "guestio log COLLISION"); i >= 0 {
			return fmt.Errorf("console %s: a writer found another's record: %s", name, strings.SplitN(c[i:], "\n", 2)[0])
		}
		for _, cl := range pslogClaims(c) {
			if cl.Slot >= len(recs) || recs[cl.Slot] != cl {
				got := "nothing"
				if cl.Slot < len(recs) {
					got = fmt.Sprintf("%+v", recs[cl.Slot])
				}
				return fmt.Errorf("console %s: its guest wrote %+v, but the disk holds %s there: overwritten by another writer",
					name, cl, got)
			}
		}
	}
	return nil
}

// logOffset is where the guest's log starts on its 1 GiB boot disk: past
// the guest image's bytes (it boots from an initramfs, so the volume's
// bytes from here on are free).
const logOffset = 512 << 20

// logSlots is the log region of the host-failure box test (8 MiB: 27
// minutes at 10 records a second); the writer stops when it is full.
const logSlots = 16384

// maxLogSlots is the most the region can hold: the rest of the 1 GiB disk.
const maxLogSlots = (1<<30 - logOffset) / pslogSlot

// pslogBootDisk is the guest's boot disk: the root disk is QEMU's first
// virtio-blk device (bootindex 0, the lowest PCI slot), so the guest's
// kernel names it first; the config drive and every volume attached
// (serial: the volume id) come after it.
const pslogBootDisk = "/dev/vda"

// hfUserData starts the log writer on the boot disk, slots records long,
// and returns. The disk must be the 1 GiB one without a serial (volumes
// carry their id, the config drive config-2): a guest that found another
// one prints PEERSTACK-HOSTFAIL and writes nothing.
func hfUserData(slots int) string {
	return `#!/bin/sh
dev=` + pslogBootDisk + `
d=/sys/block/${dev##*/}
[ -e "$d" ] && [ "$(cat $d/size)" -ge 2097152 ] || { echo "PEERSTACK-HOSTFAIL $dev is not the 1 GiB boot disk"; exit 1; }
s=$(cat $d/serial 2>/dev/null)
[ -z "$s" ] || { echo "PEERSTACK-HOSTFAIL $dev has serial $s: not the boot disk"; exit 1; }
guestio log "$dev" ` + strconv.Itoa(logOffset) + ` 100ms ` + strconv.Itoa(slots) + ` </dev/null >/dev/console 2>&1 &
exit 0
`
}

// GuestLogSlots is a log region for a guest writing for about d (10
// records a second at most), with room to spare, capped by the disk.
func GuestLogSlots(d time.Duration) int {
	return min(max(logSlots, int(2*d.Seconds()*10)), maxLogSlots)
}

// GuestLogUserData is the user data that starts the log writer on a
// server's 1 GiB boot disk, slots records long (GuestLogSlots).
func GuestLogUserData(slots int) string { return hfUserData(slots) }

// VolumeFile is volume vol's file in the NAS's export.
func (b *Box) VolumeFile(vol string) (string, error) {
	files, err := b.NASFiles()
	if err != nil {
		return "", err
	}
	for _, f := range files {
		if strings.Contains(f, vol) {
			return filepath.Join(b.Export, f), nil
		}
	}
	return "", fmt.Errorf("volume %s is not on the NAS: %v", vol, files)
}

// ReadGuestLog reads the log region (slots records from logOffset) of a
// boot volume's file in the NAS's export (qemu-img with -U: the guest may
// be running), through a scratch file in dir.
func ReadGuestLog(ctx context.Context, file, dir string, slots int) ([]byte, error) {
	if slots <= 0 || slots > maxLogSlots {
		return nil, fmt.Errorf("log region of %d slots: want 1–%d", slots, maxLogSlots)
	}
	format := strings.TrimPrefix(filepath.Ext(file), ".")
	if format != "qcow2" && format != "raw" {
		return nil, fmt.Errorf("boot volume file %s: unknown format", file)
	}
	out := filepath.Join(dir, "log.raw")
	_ = os.Remove(out)
	// qemu-img dd (7.2) counts count from the start of the input, skip
	// included; a version counting it after skip copies more, of which
	// the first bytes are the same.
	const bs = 64 << 10
	size := slots * pslogSlot
	if _, err := sh(ctx, "qemu-img", "dd", "-U", "-f", format, "-O", "raw", "bs="+strconv.Itoa(bs),
		"skip="+strconv.Itoa(logOffset/bs), "count="+strconv.Itoa((logOffset+size+bs-1)/bs), "if="+file, "of="+out); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if len(raw) < size {
		return nil, fmt.Errorf("qemu-img dd of %s gave %d bytes; want %d", file, len(raw), size)
	}
	return raw[:size], nil
}

// GuestLogBoots are the boot ids of the log writers a console shows
// starting, in order.
func GuestLogBoots(console string) []string { return pslogBoots(console) }

// GuestLogClaims is how many records a console says its writer wrote.
func GuestLogClaims(console string) int { return len(pslogClaims(console)) }

var pslogProblemRE = regexp.MustCompile(`(guestio log COLLISION|guestio:|PEERSTACK-HOSTFAIL)[^\r\n]*`)

// GuestLogSeen gathers what one server's consoles showed of its log
// writers over a run, read again and again: a console is cut (the
// hypervisor trims it past its limit, dropping the oldest lines, the
// start line first) and removed (a host that comes back drops the files
// of a server that moved away), so every start line, claimed record and
// error line is kept from the first time it is seen.
type GuestLogSeen struct {
	starts   []pslogStart
	where    map[pslogStart]string
	claims   map[pslogRecord]string // record → the console it was seen on
	last     int                    // highest slot claimed, -1 if none
	problems []string
	problem  map[string]bool
}

// NewGuestLogSeen returns an empty record of consoles.
func NewGuestLogSeen() *GuestLogSeen {
	return &GuestLogSeen{where: map[pslogStart]string{}, claims: map[pslogRecord]string{}, last: -1, problem: map[string]bool{}}
}

// Add takes in what console (named where, e.g. its host) shows now.
func (g *GuestLogSeen) Add(where, console string) {
	for _, st := range pslogStarts(console) {
		if _, ok := g.where[st]; !ok {
			g.where[st] = where
			g.starts = append(g.starts, st)
		}
	}
	for _, cl := range pslogClaims(console) {
		if _, ok := g.claims[cl]; !ok {
			g.claims[cl] = where
			g.last = max(g.last, cl.Slot)
		}
	}
	for _, p := range pslogProblemRE.FindAllString(console, -1) {
		if p = where + ": " + p; !g.problem[p] {
			g.problem[p] = true
			g.problems = append(g.problems, p)
		}
	}
}

// Problems are the writers' failures seen: a collision, an error of
// guestio (the log full among them), a guest that found no boot disk.
func (g *GuestLogSeen) Problems() []string { return g.problems }

// LastSlot is the highest slot a console claimed written, -1 if none.
func (g *GuestLogSeen) LastSlot() int { return g.last }

// Boots is how many writers were seen starting.
func (g *GuestLogSeen) Boots() int { return len(g.starts) }

// CheckGuestLogSeen checks a log read by ReadGuestLog against what the
// consoles showed: one writer at a time, each on the boot disk and seen
// starting, no writer's failure, every record claimed still on the disk.
// It returns the number of records and the writers' boots in the order
// they wrote.
func CheckGuestLogSeen(raw []byte, g *GuestLogSeen) (records int, boots []string, err error) {
	recs, runs, err := checkPSLog(raw)
	if err != nil {
		return 0, nil, err
	}
	if len(g.problems) > 0 {
		return len(recs), nil, fmt.Errorf("a writer failed: %s", strings.Join(g.problems, "; "))
	}
	started := map[string]bool{}
	for _, st := range g.starts {
		if st.Dev != pslogBootDisk {
			return len(recs), nil, fmt.Errorf("console %s: boot %s wrote its log on %s, not on the boot disk %s", g.where[st], st.Boot, st.Dev, pslogBootDisk)
		}
		started[st.Boot] = true
	}
	for cl, where := range g.claims {
		if !started[cl.Boot] {
			return len(recs), nil, fmt.Errorf("console %s: boot %s's records seen, never its start line (the console was cut before it was read)", where, cl.Boot)
		}
		if cl.Slot >= len(recs) || recs[cl.Slot] != cl {
			got := "nothing"
			if cl.Slot < len(recs) {
				got = fmt.Sprintf("%+v", recs[cl.Slot])
			}
			return len(recs), nil, fmt.Errorf("console %s: its guest wrote %+v, but the disk holds %s there: overwritten by another writer",
				where, cl, got)
		}
	}
	for _, r := range runs {
		boots = append(boots, r.Boot)
	}
	return len(recs), boots, nil
}
