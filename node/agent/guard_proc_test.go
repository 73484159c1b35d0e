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
	root := t.TempDir()
	o := newProcOwner(root)
	fakeProc(t, root, 40, "qemu-system-x86_64\x00-name\x00guest=inst-1\x00", "777", "S (sleeping)", 5)
	if !o.owns(40, "inst-1") {
		t.Fatal("a running QEMU naming the instance is not owned")
	}
	if o.owns(40, "inst-2") {
		t.Fatal("a QEMU of another instance is owned")
	}
	fakeProc(t, root, 40, "qemu-system-x86_64\x00-name\x00guest=inst-1\x00", "777", "S (sleeping)", 5)
	o.owns(40, "inst-1")
	// The main thread exited; two threads are stuck in the kernel.
	fakeProc(t, root, 40, "", "777", "Z (zombie)", 3)
	if !o.owns(40, "inst-1") {
		t.Fatal("a QEMU with threads left counts as gone once its command line reads empty")
	}
	// Every thread is gone but the zombie leader.
	fakeProc(t, root, 40, "", "777", "Z (zombie)", 1)
	if o.owns(40, "inst-1") {
		t.Fatal("a zombie counts as alive")
	}
	// The pid reused by another process (another start time) with no
	// command line, e.g. a kernel thread.
	fakeProc(t, root, 40, "", "999", "S (sleeping)", 1)
	if o.owns(40, "inst-1") {
		t.Fatal("a reused pid is owned")
	}
	// A process never seen naming the instance is not taken for it.
	fakeProc(t, root, 41, "", "5", "D (disk sleep)", 2)
	if o.owns(41, "inst-1") {
		t.Fatal("a process with no command line, never seen as the VM, is owned")
	}
	if o.owns(42, "inst-1") {
		t.Fatal("a pid that does not exist is owned")
	}
}

// The real /proc: this test process names its binary.
func TestProcOwnerReadsProc(t *testing.T) {
	o := newProcOwner("/proc")
	if !o.owns(os.Getpid(), filepath.Base(os.Args[0])) {
		t.Fatalf("this process (%s) is not owned by its own name", os.Args[0])
	}
	if _, ok := procStart(filepath.Join("/proc", strconv.Itoa(os.Getpid()))); !ok || !procLive(filepath.Join("/proc", strconv.Itoa(os.Getpid()))) {
		t.Fatal("this process reads as not live")
	}
}
