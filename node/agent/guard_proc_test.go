package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fakeProc writes a process's cmdline, stat and status under root.
func fakeProc(t *testing.T, root string, pid int, cmdline, start, state string, threads int) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	stat := strconv.Itoa(pid) + " (qemu-system-x86) " + state[:1] + " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 " + start + " 20 21\n"
	status := "Name:\tqemu-system-x86\nState:\t" + state + "\nTgid:\t" + strconv.Itoa(pid) + "\nThreads:\t" + strconv.Itoa(threads) + "\n"
	for name, body := range map[string]string{"cmdline": cmdline, "stat": stat, "status": status} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A QEMU whose main thread has exited reads an empty command line while
// other threads may still be stuck in the kernel: the guard must count it
// alive (and so not pet the watchdog) until only a zombie is left, but
// never take another process for it.
func TestProcOwnerCountsAVMAliveWhileAThreadIs(t *testing.T) {
	const inst1, inst2 = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
	root := t.TempDir()
	o := newProcOwner(root)
	fakeProc(t, root, 40, "qemu-system-x86_64\x00-name\x00guest="+inst1+"\x00", "777", "S (sleeping)", 5)
	if !o.owns(40, inst1) {
		t.Fatal("a running QEMU naming the instance is not owned")
	}
	if o.owns(40, inst2) {
		t.Fatal("a QEMU of another instance is owned")
	}
	fakeProc(t, root, 40, "qemu-system-x86_64\x00-name\x00guest="+inst1+"\x00", "777", "S (sleeping)", 5)
	o.owns(40, inst1)
	// The main thread exited; two threads are stuck in the kernel.
	fakeProc(t, root, 40, "", "777", "Z (zombie)", 3)
	if !o.owns(40, inst1) {
		t.Fatal("a QEMU with threads left counts as gone once its command line reads empty")
	}
	// Every thread is gone but the zombie leader.
	fakeProc(t, root, 40, "", "777", "Z (zombie)", 1)
	if o.owns(40, inst1) {
		t.Fatal("a zombie counts as alive")
	}
	// The pid reused by another process (another start time) with no
	// command line, e.g. a kernel thread.
	fakeProc(t, root, 40, "", "999", "S (sleeping)", 1)
	if o.owns(40, inst1) {
		t.Fatal("a reused pid is owned")
	}
	// A process never seen naming the instance is not taken for it.
	fakeProc(t, root, 41, "", "5", "D (disk sleep)", 2)
	if o.owns(41, inst1) {
		t.Fatal("a process with no command line, never seen as the VM, is owned")
	}
	if o.owns(42, inst1) {
		t.Fatal("a pid that does not exist is owned")
	}
}

// The real /proc: a running process whose command line names the
// instance (a stand-in QEMU) is owned.
func TestProcOwnerReadsProc(t *testing.T) {
	const id = "00000000-0000-4000-8000-000000000003"
	q := startFakeQEMU(t, id)
	o := newProcOwner("/proc")
	if !o.owns(q.pid, id) {
		t.Fatalf("pid %d, whose command line names %s, is not owned", q.pid, id)
	}
	dir := filepath.Join("/proc", strconv.Itoa(q.pid))
	if _, ok := procStart(dir); !ok || !procLive(dir) {
		t.Fatal("the stand-in QEMU reads as not live")
	}
}

// Only an instance's full id names its QEMU: an empty id is part of
// every command line and a short one of many, so neither is owned, even
// by a live process that is owned under its full id.
func TestProcOwnerNeedsAnInstanceID(t *testing.T) {
	const id = "00000000-0000-4000-8000-000000000004"
	root := t.TempDir()
	fakeProc(t, root, 50, "qemu-system-x86_64\x00-name\x00guest="+id+"\x00", "777", "S (sleeping)", 5)
	o := newProcOwner(root)
	bad := func(when string) {
		t.Helper()
		for _, b := range []string{"", "qemu", "0000", id[:35]} {
			if o.owns(50, b) {
				t.Fatalf("%s: pid 50 owned for the id %q", when, b)
			}
		}
	}
	bad("never seen")
	if !o.owns(50, id) {
		t.Fatalf("pid 50 not owned for its instance %s", id)
	}
	bad("seen as its instance's")
	// With its command line gone the owner goes by what it saw.
	fakeProc(t, root, 50, "", "777", "Z (zombie)", 3)
	bad("command line gone")
	if !o.owns(50, id) {
		t.Fatalf("pid 50 with threads left not owned for its instance %s", id)
	}
	// The same on the real /proc.
	q := startFakeQEMU(t, id)
	o = newProcOwner("/proc")
	if o.owns(q.pid, "") {
		t.Fatalf("live pid %d owned for the empty id", q.pid)
	}
	if !o.owns(q.pid, id) {
		t.Fatalf("live pid %d not owned for its instance %s", q.pid, id)
	}
}
