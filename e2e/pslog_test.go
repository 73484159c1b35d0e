package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
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

// A writer on another disk than the boot disk (an attached volume after
// a reboot) is caught, as is a log that fills every slot read.
func TestPSLogBootDiskAndFullRegion(t *testing.T) {
	const a = "aaaa-1"
	recs, _, err := checkPSLog(pslogDisk(pslogSeq(a, 0, 3)...))
	if err != nil {
		t.Fatal(err)
	}
	onVolume := "guestio log start dev=/dev/vdc boot=" + a + " slot=0\r\nguestio log slot=0 boot=" + a + " seq=0\r\n"
	if err := checkPSClaims(recs, map[string]string{"h1": onVolume}); err == nil || !strings.Contains(err.Error(), "/dev/vdc") {
		t.Errorf("a writer on /dev/vdc: %v; want it named", err)
	}
	full := pslogDisk(pslogSeq(a, 0, 3)...)[:3*pslogSlot]
	if _, _, err := checkPSLog(full); err == nil {
		t.Error("a log filling the whole region read passed")
	}
	if ud := hfUserData(777); !strings.Contains(ud, "dev="+pslogBootDisk) || !strings.Contains(ud, " 100ms 777 ") {
		t.Errorf("user data does not write %s with 777 slots:\n%s", pslogBootDisk, ud)
	}
	if n := GuestLogSlots(30 * time.Minute); n < 30*60*10 || n > maxLogSlots {
		t.Errorf("GuestLogSlots(30m) = %d; want room for 18000 records within %d", n, maxLogSlots)
	}
	if n := GuestLogSlots(1000 * time.Hour); n != maxLogSlots {
		t.Errorf("GuestLogSlots(1000h) = %d; want the cap %d", n, maxLogSlots)
	}
}

// What consoles showed over a run is kept although a console is cut or
// removed later; a writer's failure, a writer on the wrong disk, records
// of a writer never seen starting and records overwritten all fail.
func TestGuestLogSeen(t *testing.T) {
	const a, b = "aaaa-1", "bbbb-2"
	good := append(pslogSeq(a, 0, 5), pslogSeq(b, 5, 3)...)
	disk := pslogDisk(good...)
	line := func(r pslogRecord) string {
		return fmt.Sprintf("guestio log slot=%d boot=%s seq=%d\r\n", r.Slot, r.Boot, r.Seq)
	}
	start := func(dev, boot string, slot int) string {
		return fmt.Sprintf("guestio log start dev=%s boot=%s slot=%d\r\n", dev, boot, slot)
	}
	var h1, h2 strings.Builder
	h1.WriteString("PEERSTACK-BOOT\r\n" + start("/dev/vda", a, 0))
	for _, r := range good[:5] {
		h1.WriteString(line(r))
	}
	h2.WriteString(start("/dev/vda", b, 5))
	for _, r := range good[5:] {
		h2.WriteString(line(r))
	}
	g := NewGuestLogSeen()
	g.Add("h1", h1.String())
	g.Add("h2", h2.String()[:len(h2.String())-len(line(good[7]))])
	g.Add("h2", h2.String())
	g.Add("h1", line(good[4])) // cut: only its last line left
	if recs, boots, err := CheckGuestLogSeen(disk, g); err != nil || recs != 8 || len(boots) != 2 || g.LastSlot() != 7 || g.Boots() != 2 {
		t.Fatalf("a clean run: %d records, boots %v, last %d: %v", recs, boots, g.LastSlot(), err)
	}

	for name, tc := range map[string]struct {
		add  func(g *GuestLogSeen)
		want string
	}{
		"guestio error": {func(g *GuestLogSeen) { g.Add("h2", "guestio: log full after 8 slots\r\n") }, "log full"},
		"collision":     {func(g *GuestLogSeen) { g.Add("h2", "guestio log COLLISION slot=3 want=\"\" found=\"x\"\r\n") }, "COLLISION"},
		"no boot disk":  {func(g *GuestLogSeen) { g.Add("h3", "PEERSTACK-HOSTFAIL /dev/vda is not\r\n") }, "PEERSTACK-HOSTFAIL"},
		"on a volume":   {func(g *GuestLogSeen) { g.Add("h3", start("/dev/vdc", "cccc-3", 8)) }, "/dev/vdc"},
		"start line never seen": {func(g *GuestLogSeen) {
			g.Add("h3", line(pslogRecord{Slot: 8, Boot: "cccc-3", Seq: 0}))
		}, "never its start line"},
		"overwritten": {func(g *GuestLogSeen) { g.Add("h1", line(pslogRecord{Slot: 5, Boot: a, Seq: 5})) }, "overwritten"},
	} {
		g := NewGuestLogSeen()
		g.Add("h1", h1.String())
		g.Add("h2", h2.String())
		tc.add(g)
		if _, _, err := CheckGuestLogSeen(disk, g); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error saying %q", name, err, tc.want)
		}
	}
}
