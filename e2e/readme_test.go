package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeWalkthrough returns the shell lines of README.md's first fenced
// block after the line that starts with marker, so the test runs exactly
// what a newcomer copies.
func readmeWalkthrough(readme, marker string) (string, error) {
	sc := bufio.NewScanner(strings.NewReader(readme))
	found, in := false, false
	var lines []string
	for sc.Scan() {
		l := sc.Text()
		switch {
		case !found:
			found = strings.HasPrefix(l, marker)
		case !in && strings.HasPrefix(l, "```"):
			in = true
		case in && strings.HasPrefix(l, "```"):
			return strings.Join(lines, "\n") + "\n", nil
		case in:
			lines = append(lines, l)
		}
	}
	if !found {
		return "", fmt.Errorf("README.md has no line starting with %q", marker)
	}
	return "", fmt.Errorf("README.md: no closed code block after %q", marker)
}

func TestReadmeWalkthroughExtract(t *testing.T) {
	md := "intro\n```\nmake run\n```\nThen, in another shell:\n\n```\na b\nc # d\n```\n```\nnot this\n```\n"
	got, err := readmeWalkthrough(md, "Then, in another shell:")
	if want := "a b\nc # d\n"; err != nil || got != want {
		t.Fatalf("readmeWalkthrough = %q, %v; want %q", got, err, want)
	}
	if _, err := readmeWalkthrough("no marker\n", "Then"); err == nil {
		t.Fatal("readmeWalkthrough without the marker: no error")
	}
	if _, err := readmeWalkthrough("Then\n```\nopen\n", "Then"); err == nil {
		t.Fatal("readmeWalkthrough with an unclosed block: no error")
	}
}

// TestReadmeWalkthrough runs `make run` in a copy of the repository, then
// README.md's walkthrough verbatim in another shell, as a newcomer on a
// fresh Debian host would. The daemon runs in a network namespace of the
// test's own, so its bridges and taps vanish with it.
func TestReadmeWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("README walkthrough: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("README walkthrough: needs root (network namespace, tap devices)")
	}
	root := RepoRoot()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	script, err := readmeWalkthrough(string(readme), "Then, in another shell:")
	if err != nil {
		t.Fatal(err)
	}
	guest := filepath.Join(root, "build", "guest.qcow2")
	if _, err := os.Stat(guest); err != nil {
		t.Fatalf("the walkthrough needs the test guest (make guest-image): %v", err)
	}
	dir := t.TempDir()
	copyRepo(t, root, dir)

	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	ns := "psreadme" + strconv.Itoa(os.Getpid())
	mustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		// VMs outlive their daemon by design: kill the ones of this copy by PID.
		killUnder(dir)
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	for _, args := range [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", "psrd0", "type", "veth", "peer", "name", "psrd1"},
		{"-n", ns, "link", "set", "psrd1", "up"},
		{"-n", ns, "addr", "add", "192.0.2.10/24", "dev", "psrd0"},
		{"-n", ns, "link", "set", "psrd0", "up"},
	} {
		mustRun(t, "ip", args...)
	}

	// Shell one: make run, left running.
	var runOut lockedBuf
	mk := exec.Command("ip", "netns", "exec", ns, "make", "run")
	mk.Dir, mk.Stdout, mk.Stderr = dir, &runOut, &runOut
	mk.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := mk.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = mk.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-mk.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-mk.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("--- make run ---\n%s", tail(runOut.String(), 6000))
		}
	})
	for !strings.Contains(runOut.String(), "clouds.yaml:") {
		select {
		case <-done:
			t.Fatalf("make run exited:\n%s", runOut.String())
		case <-ctx.Done():
			t.Fatalf("make run printed no credentials:\n%s", runOut.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !strings.Contains(runOut.String(), "admin password: in ") {
		t.Fatalf("make run did not say where the admin password is:\n%s", runOut.String())
	}

	// Shell two: the walkthrough, line by line, stopping at the first failure.
	start := time.Now()
	var out bytes.Buffer
	sh := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "bash", "-euxo", "pipefail", "-s")
	sh.Dir, sh.Stdin = dir, strings.NewReader(script)
	sh.Stdout, sh.Stderr = &out, &out
	sh.Env = cleanEnv()
	if err := sh.Run(); err != nil {
		t.Fatalf("README walkthrough failed: %v\n%s", err, out.String())
	}
	t.Logf("README walkthrough passed in %.1f s", time.Since(start).Seconds())

	// What the walkthrough claims it made, checked through the client.
	clouds := filepath.Join(dir, "data", "clouds.yaml")
	osc := func(args ...string) string {
		c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, "openstack"}, args...)...)
		c.Env = append(cleanEnv(), "OS_CLIENT_CONFIG_FILE="+clouds, "OS_CLOUD=peerstack")
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return strings.TrimSpace(string(b))
	}
	for _, vm := range []string{"vm1", "vm2"} {
		if st := osc("server", "show", vm, "-f", "value", "-c", "status"); st != "ACTIVE" {
			t.Errorf("server %s status %q after the walkthrough; want ACTIVE", vm, st)
		}
	}
	if st := osc("volume", "show", "vol1", "-f", "value", "-c", "status"); st != "in-use" {
		t.Errorf("vol1 status %q after the walkthrough; want in-use", st)
	}
	if !strings.Contains(out.String(), "alive") {
		t.Errorf("peerstack members in the walkthrough did not list the host alive:\n%s", tail(out.String(), 2000))
	}
}

// cleanEnv is the test's environment without any OS_* settings of the
// developer's own, so the walkthrough sees what a new shell would.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OS_") {
			env = append(env, kv)
		}
	}
	return env
}

// copyRepo copies the tracked files of the repository (and the built
// binary and test guest, keeping their times so make sees them up to date)
// into dir: a fresh checkout as a newcomer would have it.
func copyRepo(t *testing.T, root, dir string) {
	t.Helper()
	ls := exec.Command("git", "ls-files", "-z")
	ls.Dir = root
	files, err := ls.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	names := strings.Split(strings.TrimRight(string(files), "\x00"), "\x00")
	names = append(names, "bin/peerstack", "build/guest.qcow2")
	for _, name := range names {
		if name == "" {
			continue
		}
		src, dst := filepath.Join(root, name), filepath.Join(dir, name)
		fi, err := os.Stat(src)
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet in the index
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(src, dst, fi); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(src, dst string, fi os.FileInfo) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}

// killUnder SIGKILLs every process whose command line names dir (the QEMUs
// a daemon in dir started).
func killUnder(dir string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
