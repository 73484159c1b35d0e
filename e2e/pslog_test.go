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
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
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

// pslogBoots are the boot ids of the writers a console shows starting, in
// order.
func pslogBoots(console string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`guestio log start dev=\S+ boot=([0-9a-f-]+)`).FindAllStringSubmatch(console, -1) {
		out = append(out, m[1])
	}
	return out
}

// checkPSClaims checks the consoles (by name) against the records on the
// disk: no writer saw another's record (COLLISION), and every record a
// console claims is on the disk unchanged.
func checkPSClaims(recs []pslogRecord, consoles map[string]string) error {
	for name, c := range consoles {
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

// --- unit tests of the checker (no box needed) ----------------------------

func pslogDisk(recs ...pslogRecord) []byte {
	out := make([]byte, (len(recs)+4)*pslogSlot)
	for i, r := range recs {
		copy(out[i*pslogSlot:], fmt.Sprintf("%sslot=%d boot=%s seq=%d\n", pslogMagic, r.Slot, r.Boot, r.Seq))
	}
	return out
}

// pslogSeq returns n records of boot starting at slot first with seq 0.
func pslogSeq(boot string, first, n int) []pslogRecord {
	var out []pslogRecord
	for k := 0; k < n; k++ {
		out = append(out, pslogRecord{Slot: first + k, Boot: boot, Seq: k})
	}
	return out
}

func TestPSLogChecker(t *testing.T) {
	const a, b, c = "aaaa-1", "bbbb-2", "cccc-3"
	good := append(append(pslogSeq(a, 0, 5), pslogSeq(b, 5, 3)...), pslogSeq(c, 8, 2)...)
	recs, runs, err := checkPSLog(pslogDisk(good...))
	if err != nil {
		t.Fatalf("a clean log of three writers: %v", err)
	}
	if len(recs) != 10 || len(runs) != 3 || runs[1] != (pslogRun{Boot: b, First: 5, Last: 7}) || runs[0].Records() != 5 {
		t.Fatalf("runs = %+v (%d records)", runs, len(recs))
	}
	interleaved := append(append(pslogSeq(a, 0, 3), pslogSeq(b, 3, 2)...), pslogRecord{Slot: 5, Boot: a, Seq: 3})
	overwritten := append(pslogSeq(a, 0, 3), pslogRecord{Slot: 3, Boot: b, Seq: 4})
	gap := append(pslogSeq(a, 0, 3), pslogRecord{Slot: 3, Boot: a, Seq: 4})
	misplaced := append(pslogSeq(a, 0, 3), pslogRecord{Slot: 2, Boot: a, Seq: 3})
	for name, disk := range map[string][]byte{
		"old writer again after the new one": pslogDisk(interleaved...),
		"new run not starting at seq 0":      pslogDisk(overwritten...),
		"seq gap within a run":               pslogDisk(gap...),
		"record in the wrong slot":           pslogDisk(misplaced...),
		"record after the end": func() []byte {
			d := pslogDisk(pslogSeq(a, 0, 6)...)
			clear(d[3*pslogSlot : 4*pslogSlot])
			return d
		}(),
	} {
		if _, _, err := checkPSLog(disk); err == nil {
			t.Errorf("%s: the checker found nothing wrong", name)
		}
	}

	console := func(rs ...pslogRecord) string {
		var s strings.Builder
		s.WriteString("guestio log start dev=/dev/vda boot=" + rs[0].Boot + " slot=0\r\n")
		for _, r := range rs {
			fmt.Fprintf(&s, "guestio log slot=%d boot=%s seq=%d\r\n", r.Slot, r.Boot, r.Seq)
		}
		return s.String()
	}
	if got := pslogBoots(console(good[:2]...)); len(got) != 1 || got[0] != a {
		t.Fatalf("pslogBoots = %v", got)
	}
	if err := checkPSClaims(recs, map[string]string{"h1": console(good[:5]...), "h2": console(good[5:8]...)}); err != nil {
		t.Fatalf("consoles of a clean log: %v", err)
	}
	lost := console(append(pslogSeq(a, 0, 5), pslogRecord{Slot: 5, Boot: a, Seq: 5})...) // slot 5 is b's on the disk
	if err := checkPSClaims(recs, map[string]string{"h1": lost}); err == nil {
		t.Error("a claimed record overwritten by another writer passed")
	}
	beyond := console(append(pslogSeq(c, 8, 2), pslogRecord{Slot: 10, Boot: c, Seq: 2})...)
	if err := checkPSClaims(recs, map[string]string{"h3": beyond}); err == nil {
		t.Error("a claimed record missing from the disk passed")
	}
	if err := checkPSClaims(recs, map[string]string{"h1": "guestio log COLLISION slot=3 want=\"\" found=\"PSLOG …\"\n"}); err == nil {
		t.Error("a console reporting a collision passed")
	}
}
