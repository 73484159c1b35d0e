package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// imageCLIResult is one run of the peerstack binary, its streams apart.
type imageCLIResult struct {
	stdout, stderr string
	err            error
}

// imageCLIRun runs bin with the cloud environment, stdout and stderr
// apart (pipes, not a terminal).
func imageCLIRun(clouds, bin string, args ...string) imageCLIResult {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+clouds, "OS_CLOUD=peerstack")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return imageCLIResult{stdout.String(), stderr.String(), err}
}

// imageCLIFile writes n random bytes (a raw disk: no image magic) and
// returns the path and the md5 in hex.
func imageCLIFile(t *testing.T, dir, name string, n int, seed uint64) (string, string) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 99))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if n > 0 {
		b[0] = 0xeb
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(b)
	return p, hex.EncodeToString(sum[:])
}

// imageCLIIDs lists the image IDs `openstack image list` shows, sorted.
func imageCLIIDs(t *testing.T, clouds string) []string {
	t.Helper()
	var list []map[string]any
	oscJSON(t, clouds, &list, "image", "list")
	var ids []string
	for _, im := range list {
		id, _ := im["ID"].(string)
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

var (
	imageCLIUUID     = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
	imageCLICreated  = regexp.MustCompile(`^created image (` + imageCLIUUID + `) \((.+), (qcow2|raw|iso)\); uploading [0-9.]+ (B|[KMG]iB)$`)
	imageCLIProgress = regexp.MustCompile(`^uploaded [0-9.]+ (B|[KMG]iB) of [0-9.]+ (B|[KMG]iB) \((\d+)%\), [0-9.]+ (B|[KMG]iB)/s(, \d+s left)?$`)
	imageCLIIDLine   = regexp.MustCompile(`^` + imageCLIUUID + `$`)
)

func imageCLILines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// imageCLIUpload runs `peerstack image upload` and checks the
// non-interactive output: on stderr "created image ID (NAME, FORMAT);
// uploading SIZE", then progress lines ending at 100% (one per 10% from
// 8 MiB); on stdout "# image NAME active: N bytes, md5 SUM" and the image
// ID alone on the last line. It returns the ID.
func imageCLIUpload(t *testing.T, clouds, bin, wantName, wantFormat string, size int, md5sum string, wantLines int, args ...string) string {
	t.Helper()
	r := imageCLIRun(clouds, bin, append([]string{"image", "upload"}, args...)...)
	if r.err != nil {
		t.Fatalf("peerstack image upload %v: %v\nstdout:\n%s\nstderr:\n%s", args, r.err, r.stdout, r.stderr)
	}
	errLines := imageCLILines(r.stderr)
	if len(errLines) < 2 {
		t.Fatalf("upload %v: stderr has %d lines; want the created line and progress:\n%s", args, len(errLines), r.stderr)
	}
	m := imageCLICreated.FindStringSubmatch(errLines[0])
	if m == nil || m[2] != wantName || m[3] != wantFormat {
		t.Fatalf("upload %v: first stderr line %q; want created image ID (%s, %s); uploading SIZE", args, errLines[0], wantName, wantFormat)
	}
	id := m[1]
	last := -1
	for _, l := range errLines[1:] {
		pm := imageCLIProgress.FindStringSubmatch(l)
		if pm == nil {
			t.Fatalf("upload %v: stderr line %q is no progress line (%s)", args, l, imageCLIProgress)
		}
		var pct int
		fmt.Sscan(pm[3], &pct)
		if pct <= last {
			t.Errorf("upload %v: progress went from %d%% to %d%%", args, last, pct)
		}
		last = pct
	}
	if last != 100 || len(errLines)-1 != wantLines {
		t.Errorf("upload %v: %d progress lines ending at %d%%; want %d ending at 100%%:\n%s", args, len(errLines)-1, last, wantLines, r.stderr)
	}
	out := imageCLILines(strings.TrimRight(r.stdout, "\n"))
	wantSummary := fmt.Sprintf("# image %s active: %d bytes, md5 %s", wantName, size, md5sum)
	if len(out) != 2 || out[0] != wantSummary || !imageCLIIDLine.MatchString(out[1]) || out[1] != id || LastLine(r.stdout) != id {
		t.Fatalf("upload %v: stdout %q; want %q and the ID %s alone on the last line", args, r.stdout, wantSummary, id)
	}
	return id
}

// imageCLIRefused runs an upload that must fail and checks: a non-zero
// exit, nothing on stdout, and stderr ending in one line "peerstack: …"
// that contains each of want.
func imageCLIRefused(t *testing.T, clouds, bin string, args []string, want ...string) {
	t.Helper()
	r := imageCLIRun(clouds, bin, append([]string{"image", "upload"}, args...)...)
	if r.err == nil {
		t.Fatalf("peerstack image upload %v succeeded; want a failure\n%s%s", args, r.stdout, r.stderr)
	}
	lines := imageCLILines(r.stderr)
	msg := LastLine(r.stderr)
	errs := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "peerstack: ") {
			errs++
		}
	}
	if len(lines) == 0 || lines[len(lines)-1] != msg || !strings.HasPrefix(msg, "peerstack: ") || errs != 1 || r.stdout != "" {
		t.Fatalf("upload %v: stdout %q, stderr %q; want nothing on stdout and one final line peerstack: …", args, r.stdout, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("upload %v: error %q lacks %q", args, msg, w)
		}
	}
}

// TestImageUploadCLI runs `peerstack image upload` (the real binary, pipes
// for output) against a real daemon, checks the result with the real
// openstack client, and checks that refused or interrupted uploads exit
// non-zero with one clear line and leave no image behind.
func TestImageUploadCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: not in -short mode")
	}
	bin := Binary(t)
	root := t.TempDir()
	a := StartDaemon(t, "imgcli", filepath.Join(root, "a"), "agent")
	clouds := filepath.Join(a.DataDir, "clouds.yaml")
	dir := t.TempDir()

	// A 9 MiB raw file: a progress line per 10%.
	const rawSize = 9<<20 + 12345
	raw, rawMD5 := imageCLIFile(t, dir, "disk.raw", rawSize, 1)
	idRaw := imageCLIUpload(t, clouds, bin, "cli-raw", "raw", rawSize, rawMD5, 10,
		raw, "--name", "cli-raw", "--property", "os_distro=test", "--min-ram", "64")
	var show map[string]any
	oscJSON(t, clouds, &show, "image", "show", idRaw)
	props, _ := show["properties"].(map[string]any)
	if show["status"] != "active" || show["size"] != float64(rawSize) || show["checksum"] != rawMD5 || show["name"] != "cli-raw" ||
		show["disk_format"] != "raw" || show["container_format"] != "bare" || show["min_ram"] != float64(64) || props["os_distro"] != "test" {
		t.Fatalf("image show %s = %v; want active, %d bytes, md5 %s, raw/bare, min_ram 64, os_distro test", idRaw, show, rawSize, rawMD5)
	}
	saved := filepath.Join(dir, "saved.raw")
	osc(t, clouds, "image", "save", "--file", saved, idRaw)
	want, _ := os.ReadFile(raw)
	if got, _ := os.ReadFile(saved); !bytes.Equal(got, want) {
		t.Fatalf("image save wrote %d bytes that differ from the %d uploaded", len(got), len(want))
	}

	// A small qcow2: the format is read from the file, the name from the
	// file name; one progress line at the end.
	qcow := filepath.Join(dir, "tiny-vm.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", qcow, "32M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v %s", err, out)
	}
	qb, _ := os.ReadFile(qcow)
	qsum := md5.Sum(qb)
	idQcow := imageCLIUpload(t, clouds, bin, "tiny-vm", "qcow2", len(qb), hex.EncodeToString(qsum[:]), 1, qcow)
	oscJSON(t, clouds, &show, "image", "show", idQcow)
	if show["status"] != "active" || show["disk_format"] != "qcow2" || show["virtual_size"] != float64(32<<20) {
		t.Fatalf("image show %s = %v; want an active qcow2 of virtual size 32 MiB", idQcow, show)
	}
	good := []string{idRaw, idQcow}
	slices.Sort(good)
	if ids := imageCLIIDs(t, clouds); !slices.Equal(ids, good) {
		t.Fatalf("image list = %v; want %v", ids, good)
	}

	// Refused before any image exists.
	imageCLIRefused(t, clouds, bin, []string{filepath.Join(dir, "missing.qcow2"), "--name", "missing"},
		"missing.qcow2", "no such file or directory")
	imageCLIRefused(t, clouds, bin, []string{raw, "--name", "vhd", "--disk-format", "vhd"},
		"--disk-format vhd: want qcow2, raw, iso")
	// Refused by the service after the image was created: the CLI
	// deletes the record again.
	imageCLIRefused(t, clouds, bin, []string{raw, "--name", "liar", "--disk-format", "qcow2"},
		"400", "not the declared disk_format qcow2", "the image record was deleted")
	Run(t, clouds, bin, "settings", "set", "image-size-limit=4MiB")
	imageCLIRefused(t, clouds, bin, []string{raw, "--name", "too-big"},
		"413", "4194304 byte limit", "the image record was deleted")
	Run(t, clouds, bin, "settings", "set", "image-size-limit=0")
	if ids := imageCLIIDs(t, clouds); !slices.Equal(ids, good) {
		t.Fatalf("image list after refused uploads = %v; want only %v", ids, good)
	}

	// Interrupted mid-upload (SIGINT after the first progress line of a
	// 1 GiB file): non-zero exit, and the image record is deleted.
	big := filepath.Join(dir, "big.raw")
	if err := os.WriteFile(big, []byte{0xeb}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 1<<30); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "image", "upload", big, "--name", "interrupted")
	cmd.Env = append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+clouds, "OS_CLOUD=peerstack")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var errOut strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		errOut.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "uploaded ") {
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	rest, _ := io.ReadAll(stderr)
	errOut.Write(rest)
	err = cmd.Wait()
	msg := LastLine(errOut.String())
	if err == nil || !strings.HasPrefix(msg, "peerstack: upload ") || !strings.Contains(msg, "interrupt") ||
		!strings.Contains(msg, "the image record was deleted") {
		t.Fatalf("interrupted upload: exit %v, stderr:\n%s\nwant a failure ending in peerstack: upload …: interrupt signal received; the image record was deleted", err, errOut.String())
	}
	if ids := imageCLIIDs(t, clouds); !slices.Equal(ids, good) {
		t.Fatalf("image list after an interrupted upload = %v; want only %v", ids, good)
	}
}
