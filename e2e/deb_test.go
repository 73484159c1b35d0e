package e2e

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildDeb runs scripts/mkdeb.sh and returns the package's path.
func buildDeb(t *testing.T, version, arch, out string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(RepoRoot(), "scripts", "mkdeb.sh"), version, arch, out)
	cmd.Dir = RepoRoot()
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mkdeb %s %s: %v\n%s", version, arch, err, b)
	}
	return LastLine(string(b))
}

func sh1(t *testing.T, name string, args ...string) string {
	t.Helper()
	b, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	return string(b)
}

// TestDebPackage builds the amd64 and arm64 packages, checks them with
// lintian and systemd-analyze, and installs, upgrades, removes and purges
// the amd64 one in a throwaway Debian root made by debootstrap.
func TestDebPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds packages and a Debian root: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("installing into a chroot needs root")
	}
	out := t.TempDir()
	v1 := buildDeb(t, "0.9.0", "amd64", out)
	v2 := buildDeb(t, "0.9.1", "amd64", out)
	arm := buildDeb(t, "0.9.0", "arm64", out)

	for _, deb := range []string{v1, arm} {
		// Warnings fail too; the overrides file documents the exceptions.
		sh1(t, "lintian", "--fail-on", "warning,error", deb)
		info := sh1(t, "dpkg-deb", "--field", deb, "Depends", "Architecture")
		if !strings.Contains(info, "qemu-utils") || !strings.Contains(info, "qemu-block-extra") {
			t.Errorf("%s Depends lacks the QEMU runtime:\n%s", deb, info)
		}
	}
	if info := sh1(t, "dpkg-deb", "--field", arm, "Depends"); !strings.Contains(info, "qemu-system-arm") || !strings.Contains(info, "qemu-efi-aarch64") {
		t.Errorf("arm64 Depends = %q; want qemu-system-arm and the UEFI firmware", info)
	}
	x := t.TempDir()
	sh1(t, "dpkg-deb", "-x", arm, x)
	f, err := elf.Open(filepath.Join(x, "usr", "bin", "peerstack"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("arm64 package holds a %v binary", f.Machine)
	}
	f.Close()

	root := debootstrapRoot(t)
	chroot := func(args ...string) string { return sh1(t, "chroot", append([]string{root}, args...)...) }
	install := func(deb string) {
		dst := filepath.Join(root, "tmp", filepath.Base(deb))
		sh1(t, "cp", deb, dst)
		// The QEMU runtime is not in the minimal root: install past it.
		chroot("dpkg", "--force-depends", "-i", "/tmp/"+filepath.Base(deb))
	}
	install(v1)
	if v := chroot("/usr/bin/peerstack", "version"); !strings.Contains(v, "0.9.0") {
		t.Fatalf("installed binary says %q; want 0.9.0", v)
	}
	for _, p := range []string{"lib/systemd/system/peerstack.service", "lib/systemd/system-sleep/peerstack", "etc/peerstack/peerstack.env", "usr/share/man/man8/peerstack.8.gz", "var/lib/peerstack"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("after install: %v", err)
		}
	}
	// systemd-sleep's hook: executable, and it runs the fence-sleep
	// subcommand with the arguments systemd-sleep passes (the root has no
	// heartbeat: nothing to stop) and ignores what it does not know.
	if fi, err := os.Stat(filepath.Join(root, "lib/systemd/system-sleep/peerstack")); err == nil && fi.Mode().Perm() != 0o755 {
		t.Errorf("system-sleep hook mode %v; want 0755", fi.Mode().Perm())
	}
	for _, args := range [][]string{{"pre", "suspend"}, {"post", "suspend"}, {"pre", "hibernate"}, {"post", "hibernate"}, {"unknown"}} {
		chroot(append([]string{"/lib/systemd/system-sleep/peerstack"}, args...)...)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system-sleep/peerstack")); !strings.Contains(string(b), "peerstack fence-sleep") {
		t.Errorf("system-sleep hook does not run fence-sleep:\n%s", b)
	}
	if fi, err := os.Stat(filepath.Join(root, "var/lib/peerstack")); err == nil && fi.Mode().Perm() != 0o700 {
		t.Errorf("/var/lib/peerstack mode %v; want 0700", fi.Mode().Perm())
	}
	// systemd's own check of the unit, against the installed tree. The
	// minimal root has no systemd: lend it the host's stock units (the
	// targets the unit orders itself after), never replacing a file.
	sh1(t, "cp", "-an", "/usr/lib/systemd/system/.", filepath.Join(root, "usr/lib/systemd/system")+"/")
	b, err := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+root, "/lib/systemd/system/peerstack.service").CombinedOutput()
	if err != nil || strings.Contains(string(b), "peerstack.service") {
		// Unknown settings are only warnings (exit 0): any line about the unit fails.
		t.Errorf("systemd-analyze verify: %v\n%s", err, b)
	}

	// An operator's edit of the config survives an upgrade (a conffile).
	env := filepath.Join(root, "etc/peerstack/peerstack.env")
	if err := os.WriteFile(env, []byte("PEERSTACK_ARGS=\"--name=edge1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/peerstack/marker"), []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	install(v2)
	if v := chroot("/usr/bin/peerstack", "version"); !strings.Contains(v, "0.9.1") {
		t.Fatalf("upgraded binary says %q; want 0.9.1", v)
	}
	if b, _ := os.ReadFile(env); !strings.Contains(string(b), "edge1") {
		t.Errorf("upgrade replaced the edited env file: %q", b)
	}

	chroot("dpkg", "--remove", "peerstack")
	if _, err := os.Stat(filepath.Join(root, "usr/bin/peerstack")); !os.IsNotExist(err) {
		t.Errorf("binary still there after remove: %v", err)
	}
	if _, err := os.Stat(env); err != nil {
		t.Errorf("remove (not purge) dropped the config: %v", err)
	}
	chroot("dpkg", "--purge", "peerstack")
	if _, err := os.Stat(filepath.Join(root, "etc/peerstack")); !os.IsNotExist(err) {
		t.Errorf("/etc/peerstack still there after purge: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/peerstack/marker")); err != nil {
		t.Errorf("purge removed this host's state (it may hold the only copy of a disk): %v", err)
	}
	if b, err := exec.Command("chroot", root, "dpkg", "-s", "peerstack").CombinedOutput(); err == nil {
		t.Errorf("dpkg still knows peerstack after purge:\n%s", b)
	}
}

// debootstrapRoot makes a minimal Debian root for the install tests, from
// the same release as the host, with the packages in include added.
func debootstrapRoot(t *testing.T, include ...string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	suite := "bookworm"
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok && v != "" {
				suite = v
			}
		}
	}
	args := []string{"--variant=minbase"}
	if len(include) > 0 {
		args = append(args, "--include="+strings.Join(include, ","))
	}
	cmd := exec.Command("debootstrap", append(args, suite, root, "http://deb.debian.org/debian")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, tail(string(b), 3000))
	}
	return root
}
