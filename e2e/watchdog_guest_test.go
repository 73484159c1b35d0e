package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFenceGuardWatchdogSoftdog runs the fence guard's watchdog against a
// real watchdog device: the kernel's softdog in a TCG guest booted from
// an initramfs (the guest image's Debian kernel, its watchdog and softdog
// modules, busybox, and a static build of this binary). The host itself
// may have no watchdog device and no loadable modules. The guest's /init
// (testdata/watchdog-init.sh) checks that the guard sets the device's
// timeout from the heartbeat (2 s) and pets it; that a lapsed lease with
// a live VM gets the VM killed and the host kept up; that a clean exit
// disarms the device (the magic 'V'); and that a guard SIGKILLed with the
// lease valid gets the host rebooted.
func TestFenceGuardWatchdogSoftdog(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	for _, tool := range []string{"qemu-system-x86_64", "dpkg-deb", "cpio", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (make deps installs it): %v", tool, err)
		}
	}
	root := RepoRoot()
	build := filepath.Join(root, "build")
	if _, err := os.Stat(filepath.Join(build, "vmlinuz")); err != nil {
		cmd := exec.Command(filepath.Join(root, "scripts", "build-guest-image.sh"), build)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the guest image (for its kernel): %v\n%s", err, out)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(build, "cache", "linux-image-*.deb"))
	if len(debs) == 0 {
		t.Fatalf("no kernel package in %s/cache (scripts/build-guest-image.sh keeps it there)", build)
	}

	dir := t.TempDir()
	initramfs := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "lib/modules", "proc", "sys", "dev", "run", "tmp", "x"} {
		if err := os.MkdirAll(filepath.Join(initramfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("go", "build", "-ldflags=-s -w", "-o", filepath.Join(initramfs, "bin", "peerstack"), ".")
	run("cp", "/bin/busybox", filepath.Join(initramfs, "bin", "busybox"))
	run("sh", "-c", fmt.Sprintf("dpkg-deb --fsys-tarfile %q | tar -x -C %q --wildcards '*drivers/watchdog/watchdog.ko' '*drivers/watchdog/softdog.ko'",
		debs[len(debs)-1], filepath.Join(initramfs, "x")))
	mods, _ := filepath.Glob(filepath.Join(initramfs, "x", "lib", "modules", "*", "kernel", "drivers", "watchdog", "*.ko"))
	if len(mods) != 2 {
		t.Fatalf("watchdog modules in %s: %v; want watchdog.ko and softdog.ko", debs[len(debs)-1], mods)
	}
	for _, m := range mods {
		run("cp", m, filepath.Join(initramfs, "lib", "modules"))
	}
	run("rm", "-rf", filepath.Join(initramfs, "x"))
	run("install", "-m", "0755", filepath.Join(root, "e2e", "testdata", "watchdog-init.sh"), filepath.Join(initramfs, "init"))
	initrd := filepath.Join(dir, "initrd.gz")
	run("sh", "-c", fmt.Sprintf("cd %q && find . | cpio -o -H newc 2>/dev/null | gzip -1 > %q", initramfs, initrd))

	// The guest must be done (or killed) before go test's own timeout
	// would end the process and leave QEMU running.
	limit := 10 * time.Minute
	if dl, ok := t.Deadline(); ok {
		limit = min(limit, time.Until(dl)-30*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var console bytes.Buffer
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1",
		"-kernel", filepath.Join(build, "vmlinuz"), "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet", "-nographic", "-no-reboot", "-display", "none",
		"-serial", "stdio", "-monitor", "none")
	qemu.Stdout, qemu.Stderr = &console, &console
	start := time.Now()
	if err := qemu.Start(); err != nil {
		t.Fatalf("qemu: %v", err)
	}
	pid := qemu.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) }) // gone already, or a failed test's
	err := qemu.Wait()
	out := console.String()
	t.Logf("guest ran %v", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, out)
	}
	for _, want := range []string{
		"CASE1 timeout=2 state=active",                                     // set from the heartbeat, petted
		"CASE2 vm-killed, host alive",                                      // lapse: the VM dies, the host stays
		"CASE3 guard gone: none, state=inactive",                           // the magic 'V' disarmed it
		"CASE3 alive 5s after the clean exit",                              //
		"CASE5 after SIGTERM with a VM alive: guard running, state=active", // still guarding
		"CASE5 VM gone: guard gone, state=inactive",                        // then disarmed
		"CASE5 alive 5s after the guard ended",                             //
		"softdog: Initiating system reboot",                                // the guard killed: the device fired
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("console lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NOT-REBOOTED") {
		t.Fatalf("the guest did not reboot after its guard was SIGKILLed:\n%s", out)
	}
	// From the SIGKILL to the reboot, on the guest's clock: the last pet
	// was at most 100 ms before the kill, so the device fires about W
	// (2 s) later; 2 s more is slack for a loaded TCG guest.
	killed := regexp.MustCompile(`SIGKILL guard at ([0-9.]+)`).FindStringSubmatch(out)
	fired := regexp.MustCompile(`\[\s*([0-9.]+)\] softdog: Initiating system reboot`).FindStringSubmatch(out)
	if killed == nil || fired == nil {
		t.Fatalf("console lacks the kill time or the reboot's timestamp:\n%s", out)
	}
	k, _ := strconv.ParseFloat(killed[1], 64)
	f, _ := strconv.ParseFloat(fired[1], 64)
	t.Logf("guard SIGKILLed at %.2f s, softdog rebooted the guest at %.2f s: %.2f s later (watchdog timeout 2 s)", k, f, f-k)
	const w = 2.0
	if f-k > w+2 || f < k {
		t.Fatalf("the guest rebooted %.2f s after its guard was SIGKILLed; want within W + 2 s (W = %.0f s)", f-k, w)
	}
}
