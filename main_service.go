package main

// Running peerstack as a system service: `peerstack init` bootstraps the
// first host under systemd, `peerstack join TOKEN` on a host where the
// package installed the unit hands the join to the service, and the
// daemon tells systemd when it is ready (sd_notify).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/peerstack/peerstack/node"
)

// Where the package puts the service's files.
const (
	serviceName    = "peerstack.service"
	defaultEnvFile = "/etc/peerstack/peerstack.env"
)

// unitPaths are where systemd looks for an installed unit, package first.
var unitPaths = []string{"/lib/systemd/system/" + serviceName, "/usr/lib/systemd/system/" + serviceName, "/etc/systemd/system/" + serviceName}

// serviceManager starts the daemon as a service. The real one is
// systemctl; tests give one that runs the unit's command line directly.
type serviceManager interface {
	EnableNow(ctx context.Context, unit string) error
}

type systemctl struct{}

func (systemctl) EnableNow(ctx context.Context, unit string) error {
	out, err := exec.CommandContext(ctx, "systemctl", "enable", "--now", unit).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl enable --now %s: %w: %s", unit, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// serviceSetup is what init and service-mode join need to know.
type serviceSetup struct {
	envFile string
	dataDir string
	mgr     serviceManager
	wait    time.Duration
}

// unitInstalled reports whether the package's systemd unit is present.
func unitInstalled() bool {
	for _, p := range unitPaths {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// serviceArgs renders the agent flags the user set on the command line
// (not the defaults) for the env file, in a stable order. --data-dir is
// the unit's own and never repeated.
func serviceArgs(fs *pflag.FlagSet) ([]string, error) {
	var args []string
	var bad error
	fs.Visit(func(f *pflag.Flag) {
		switch f.Name {
		case "data-dir", "foreground", "env-file":
			return
		}
		v := f.Value.String()
		if strings.ContainsAny(v, " \t\n\"'\\$") {
			bad = fmt.Errorf("--%s %q: values with spaces, quotes or $ cannot go into the service's env file", f.Name, v)
		}
		args = append(args, "--"+f.Name+"="+v)
	})
	sort.Strings(args)
	return args, bad
}

// writeEnvFile writes the service's environment: the agent flags and, for
// a join not yet done, the token. The file is root-only (the token is a
// secret) and replaced atomically.
func writeEnvFile(path string, args []string, token string) error {
	var b strings.Builder
	b.WriteString("# Written by `peerstack init` or `peerstack join`; read by peerstack.service.\n")
	b.WriteString("# PEERSTACK_ARGS: extra `peerstack agent` flags (see `peerstack agent --help`).\n")
	fmt.Fprintf(&b, "PEERSTACK_ARGS=\"%s\"\n", strings.Join(args, " "))
	if token != "" {
		fmt.Fprintf(&b, "PEERSTACK_JOIN_TOKEN=%s\n", token)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("env file dir: %w", err)
	}
	// A temporary file of its own (two writers, or one left by a crash,
	// never share it), created root-only: the token is never readable.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.WriteString(b.String())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install %s: %w", path, err)
	}
	return nil
}

// readEnvFile parses KEY=VALUE lines (values optionally in double quotes),
// as systemd's EnvironmentFile= does for the forms writeEnvFile writes.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("%s: bad line %q", path, l)
		}
		env[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
	}
	return env, sc.Err()
}

// start writes the env file, enables and starts the service and waits
// until the daemon has written its identity (a member of a cluster).
func (s serviceSetup) start(ctx context.Context, args []string, token string) error {
	if _, err := node.LocalAPIAddr(s.dataDir); err == nil {
		return fmt.Errorf("%s already holds a cluster member; the service runs it (systemctl status peerstack)", s.dataDir)
	}
	if err := writeEnvFile(s.envFile, args, token); err != nil {
		return err
	}
	if err := s.mgr.EnableNow(ctx, serviceName); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.wait)
	defer cancel()
	for {
		if _, err := node.LocalAPIAddr(s.dataDir); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the service did not become a cluster member within %s (journalctl -u peerstack): %w", s.wait, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if token != "" {
		// The token is spent; the member restarts from its data dir.
		return writeEnvFile(s.envFile, args, "")
	}
	return nil
}

// printCredentials tells the operator how to reach the new cluster, from
// the clouds.yaml the daemon wrote (the password is not in the journal).
func printCredentials(w io.Writer, dataDir string) error {
	clouds := filepath.Join(dataDir, "clouds.yaml")
	b, err := os.ReadFile(clouds)
	if err != nil {
		return fmt.Errorf("read the admin credentials: %w", err)
	}
	pw := ""
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && k == "password" {
			pw = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	if pw == "" {
		return fmt.Errorf("%s has no admin password", clouds)
	}
	addr, err := node.LocalAPIAddr(dataDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\npeerstack: bootstrapped a cluster; the service runs it (systemctl status peerstack)\n")
	fmt.Fprintf(w, "  API:            https://%s\n", addr)
	fmt.Fprintf(w, "  admin password: %s   (also in clouds.yaml)\n", pw)
	fmt.Fprintf(w, "  clouds.yaml:    %s\n", clouds)
	fmt.Fprintf(w, "  try:            export OS_CLIENT_CONFIG_FILE=%s OS_CLOUD=peerstack; openstack token issue\n\n", clouds)
	return nil
}

var errServiceAPIWait = errors.New("the API did not answer")

// waitAPI waits until the daemon's API port accepts connections.
func waitAPI(ctx context.Context, dataDir string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		if addr, err := node.LocalAPIAddr(dataDir); err == nil {
			var d net.Dialer
			if c, err := d.DialContext(ctx, "tcp", dialable(addr)); err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w within %s", errServiceAPIWait, wait)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dialable turns a wildcard listen address into one a local client can dial.
func dialable(addr string) string {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		h = "127.0.0.1"
	}
	return net.JoinHostPort(h, p)
}

func initCmd() *cobra.Command {
	f := &agentFlags{}
	var envFile string
	c := &cobra.Command{
		Use:   "init",
		Short: "Bootstrap a new cluster on this host as the peerstack service, and print its credentials",
		Long: "init writes the agent flags given here to the service's env file, enables and starts\n" +
			"peerstack.service, waits until the new cluster answers and prints the admin credentials.\n" +
			"Installing the package starts nothing: init (first host) or join (the others) does.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			args, err := serviceArgs(c.Flags())
			if err != nil {
				return err
			}
			s := serviceSetup{envFile: envFile, dataDir: f.cfg.DataDir, mgr: systemctl{}, wait: 2 * time.Minute}
			if err := s.start(c.Context(), args, ""); err != nil {
				return err
			}
			if err := waitAPI(c.Context(), s.dataDir, s.wait); err != nil {
				return err
			}
			return printCredentials(c.OutOrStdout(), s.dataDir)
		},
	}
	addAgentFlags(c, f)
	c.Flags().StringVar(&envFile, "env-file", defaultEnvFile, "the service's environment file")
	return c
}

// joinAsService hands a join to the installed service: the host's one
// command when the package is installed.
func joinAsService(ctx context.Context, fs *pflag.FlagSet, f *agentFlags, envFile string, w io.Writer) error {
	args, err := serviceArgs(fs)
	if err != nil {
		return err
	}
	s := serviceSetup{envFile: envFile, dataDir: f.cfg.DataDir, mgr: systemctl{}, wait: 2 * time.Minute}
	if err := s.start(ctx, args, f.cfg.JoinToken); err != nil {
		return err
	}
	addr, _ := node.LocalAPIAddr(s.dataDir)
	fmt.Fprintf(w, "peerstack: joined; the service runs this host (https://%s; systemctl status peerstack)\n", addr)
	return nil
}

// sdNotify sends a state line to systemd when the daemon runs as a
// Type=notify service (NOTIFY_SOCKET set); elsewhere it does nothing.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}
