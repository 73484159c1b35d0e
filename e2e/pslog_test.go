package e2e

import (
	"fmt"
	"strings"
	"testing"
)

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
