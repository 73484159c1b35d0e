package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// NASHost is the last octet of the NAS's underlay address.
const NASHost = 250

// startNAS starts the NAS namespace <prefix>nas at 10.x.0.250 with rpcbind
// and nfs-ganesha exporting <run>/export as /export (NFSv3, for QEMU's
// libnfs). rpcbind and ganesha get a private tmpfs on /run (ip netns exec
// gives rpcbind its own mount namespace and ganesha enters it), so runs do
// not share /run/rpcbind.sock or its lock.
func (b *Box) startNAS(ctx context.Context) error {
	for _, tool := range []string{"ganesha.nfsd", "rpcbind", "nfs-ls"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("NAS needs %s (apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils): %w", tool, err)
		}
	}
	ns := b.Prefix + "nas"
	b.NASAddr = b.Addr(NASHost)
	b.Export = filepath.Join(b.RunDir, "export")
	dir := filepath.Join(b.RunDir, "nas")
	for _, d := range []string{b.Export, dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := b.nsWithVeth(ctx, ns, "nas", b.NASAddr); err != nil {
		return err
	}
	conf := filepath.Join(dir, "ganesha.conf")
	if err := os.WriteFile(conf, []byte(ganeshaConf(b.Export)), 0o644); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(b.LogDir, "nas.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	t0 := time.Now()
	// rpcbind: sh execs it, so it is our child (reaped by us, not PID 1).
	rpcbind, rpcDone, err := b.spawn(logf, "ip", "netns", "exec", ns, "sh", "-c",
		"mount -t tmpfs tmpfs /run && exec rpcbind -f")
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		if _, err := sh(ctx, "nsenter", "-t", strconv.Itoa(rpcbind), "-m", "test", "-S", "/run/rpcbind.sock"); err == nil {
			break
		}
		select {
		case <-rpcDone:
			return fmt.Errorf("rpcbind exited (see %s)", logf.Name())
		case <-time.After(50 * time.Millisecond):
		}
		if i > 100 {
			return fmt.Errorf("rpcbind: no /run/rpcbind.sock after 5s (see %s)", logf.Name())
		}
	}
	// ganesha joins rpcbind's mount and network namespaces.
	_, done, err := b.spawn(logf, "nsenter", "-t", strconv.Itoa(rpcbind), "-m", "-n",
		"ganesha.nfsd", "-F", "-f", conf, "-L", filepath.Join(b.LogDir, "ganesha.log"),
		"-p", filepath.Join(dir, "ganesha.pid"), "-N", "NIV_EVENT")
	if err != nil {
		return err
	}
	url := "nfs://" + b.NASAddr + "/export"
	for {
		if _, err := sh(ctx, "nfs-ls", url); err == nil {
			break
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(b.LogDir, "ganesha.log"))
			return fmt.Errorf("ganesha exited: %s", tail(string(log), 1500))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Since(t0) > 30*time.Second {
			return fmt.Errorf("NAS: %s not served after 30s (see %s)", url, b.LogDir)
		}
	}
	b.Storage = url
	b.logf("NAS serving %s after %.2fs", url, time.Since(t0).Seconds())
	return nil
}

func ganeshaConf(export string) string {
	return `NFS_CORE_PARAM {
  Protocols = 3, 4;
  NFS_Port = 2049;
  MNT_Port = 20048;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Mount_Path_Pseudo = true;
}
NFSV4 { Graceless = true; }
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
  Export_Id = 1; Path = ` + export + `; Pseudo = /export;
  Protocols = 3, 4; Transports = TCP; Access_Type = RW; Squash = No_Root_Squash; SecType = sys;
  FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
`
}

// NASFiles lists the files (not directories) in the export, relative to it.
func (b *Box) NASFiles() ([]string, error) {
	if b.Export == "" {
		return nil, nil
	}
	var out []string
	err := filepath.Walk(b.Export, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			rel, _ := filepath.Rel(b.Export, p)
			out = append(out, rel)
		}
		return nil
	})
	return out, err
}

// hostLeftovers lists what host i has besides its daemon: network devices
// other than lo and eth0 in its namespace (taps ps*, bridges, VXLAN), and
// processes in its namespace or with its data dir on the command line.
// Callers compare with a baseline taken before creating anything.
func (b *Box) hostLeftovers(ctx context.Context, i int) []string {
	h := b.Host(i)
	var left []string
	out, err := sh(ctx, "ip", "-n", h.NS, "-o", "-d", "link", "show")
	if err != nil {
		return []string{err.Error()}
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
		if name != "lo" && name != "eth0" {
			left = append(left, h.Name+": device "+name)
		}
	}
	// Any process but the daemon's group in the host's namespace, or with
	// its data dir on the command line (QEMU, in its own session).
	h.mu.Lock()
	daemon := 0
	if h.cmd != nil && h.cmd.Process != nil {
		daemon = h.cmd.Process.Pid
	}
	h.mu.Unlock()
	nsLink := netnsLink(h.NS)
	for _, p := range procsMatching(func(cmdline, netns string) bool {
		return (nsLink != "" && netns == nsLink) || strings.Contains(cmdline, h.DataDir+"/")
	}) {
		if p.pgid != daemon || daemon == 0 {
			left = append(left, fmt.Sprintf("%s: process %d %s", h.Name, p.pid, tail(p.cmdline, 120)))
		}
	}
	return left
}

// Leftovers lists instance and network remains on every host and files on
// the NAS; empty means clean.
func (b *Box) Leftovers(ctx context.Context) []string {
	var left []string
	for i := range b.Hosts {
		left = append(left, b.hostLeftovers(ctx, i+1)...)
	}
	files, err := b.NASFiles()
	if err != nil {
		left = append(left, "NAS: "+err.Error())
	}
	for _, f := range files {
		left = append(left, "NAS: file "+f)
	}
	return left
}

// spawn starts a process in its own process group, output to logf, records
// the group in the state file and returns its pid and a channel closed when
// it exits (we are its parent and reap it).
func (b *Box) spawn(logf *os.File, name string, args ...string) (int, <-chan struct{}, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return cmd.Process.Pid, done, b.addPGID(cmd.Process.Pid)
}

// NASServerPid returns the pid of the NAS's NFS server (ganesha), for
// fault tests that stop and resume it.
func (b *Box) NASServerPid() (int, error) {
	if b.NASAddr == "" {
		return 0, fmt.Errorf("box %s has no NAS", b.Prefix)
	}
	data, err := os.ReadFile(filepath.Join(b.RunDir, "nas", "ganesha.pid"))
	if err != nil {
		return 0, fmt.Errorf("NFS server pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("NFS server pid %q: %w", data, err)
	}
	return pid, nil
}
