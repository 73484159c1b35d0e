// Command peerstack is the single binary of a peerstack cluster: the daemon
// (`agent`, `join`) and the operator CLI (`token`, `members [remove]`, `status`,
// `leave`).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerstack/peerstack/node"
	"github.com/peerstack/peerstack/rest/client"
	"github.com/peerstack/peerstack/rest/cluster"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "peerstack:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "peerstack",
		Short:         "A private cloud for edge and homelab clusters, with no controller",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(agentCmd(), joinCmd(), tokenCmd(), membersCmd(), statusCmd(), leaveCmd(), versionCmd(), imageCmd())
	root.AddCommand(settingsCmd(), initCmd(), fenceGuardCmd(), fenceSleepCmd())
	return root
}

type agentFlags struct {
	cfg      node.Config
	logLevel string
	fast     bool
	proxies  string
	watchdog watchdogFlags // main_fence.go
}

func addAgentFlags(c *cobra.Command, f *agentFlags) {
	fl := c.Flags()
	fl.StringVar(&f.cfg.DataDir, "data-dir", node.DefaultDataDir, "where this host keeps its state")
	fl.StringVar(&f.cfg.APIAddr, "api-addr", node.DefaultAPIAddr, "API listen address (HTTPS)")
	fl.StringVar(&f.cfg.RaftAddr, "raft-addr", node.DefaultRaftAddr, "Raft listen address (mutual TLS)")
	fl.StringVar(&f.cfg.GossipAddr, "gossip-addr", node.DefaultGossipAddr, "gossip listen address (TCP+UDP)")
	fl.StringVar(&f.cfg.AdvertiseAddr, "advertise-addr", "", "IP other hosts reach this one at (default: the bind IP or the first global IPv4)")
	fl.StringVar(&f.cfg.VTEPAddr, "vtep-addr", "", "VXLAN tunnel endpoint IP (default: the advertise address)")
	fl.StringVar(&f.cfg.Name, "name", "", "host name in the cluster (default: the OS host name)")
	fl.StringVar(&f.cfg.PublicURL, "public-url", "", "base URL clients use, for the catalog (e.g. https://cloud.example:8470)")
	fl.StringVar(&f.proxies, "trusted-proxies", "", "comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For/-Proto headers are believed (default: none)")
	fl.StringVar(&f.cfg.Storage, "storage", "", "cluster storage for a new cluster: nfs://server/export[/path] (default: a local directory on each host)")
	fl.IntVar(&f.cfg.Voters, "voters", 3, "Raft voters to keep (3 or 5; 1 for a single host)")
	fl.IntVar(&f.cfg.BcryptCost, "bcrypt-cost", 12, "bcrypt cost for passwords")
	fl.StringVar(&f.cfg.Agent.Network, "network", "netdev", "tenant networking: netdev (needs CAP_NET_ADMIN, CAP_NET_RAW) or none")
	fl.StringVar(&f.cfg.Agent.NetNS, "netns", "", "network namespace path for tenant devices (default: the daemon's)")
	fl.StringToStringVar(&f.cfg.Agent.Physnets, "physnet", nil, "map a physical (provider) network to this host's interface: name=iface (repeatable)")
	fl.StringVar(&f.cfg.Agent.QEMUBinary, "qemu", "", "QEMU binary (default: qemu-system-x86_64 in PATH)")
	fl.StringVar(&f.cfg.Agent.Accel, "accel", "", "kvm or tcg (default: detect)")
	fl.DurationVar(&f.cfg.Agent.ResyncInterval, "resync-interval", 10*time.Second, "agent full resync period")
	fl.DurationVar(&f.cfg.Agent.StopTimeout, "stop-timeout", 60*time.Second, "guest power-off grace period before QEMU is told to quit")
	fl.Var(newByteSize(&f.cfg.ImageCacheSize, node.DefaultImageCacheSize), "image-cache-size", "size this host's image cache aims to stay under: bytes, or with a unit (512MiB, 20GiB); least recently used images no local disk uses are evicted")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.DurationVar(&f.cfg.MaxClockSkew, "max-clock-skew", node.DefaultMaxClockSkew, "refuse joining hosts, and warn about members, whose clocks are further off than this")
	fl.DurationVar(&f.cfg.ClockOffset, "clock-offset", 0, "testing aid: shift this daemon's wall clock by this much (fault injection)")
	_ = fl.MarkHidden("clock-offset")
	f.watchdog.add(fl)
}

// parseProxies parses --trusted-proxies: comma-separated addresses and
// CIDR prefixes.
func parseProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// checkPhysnets refuses a mapping of two physical networks to one
// interface: a flat network of each would be one wire, and the host could
// plumb only one of them.
func checkPhysnets(m map[string]string) error {
	names := slices.Sorted(maps.Keys(m))
	by := map[string]string{}
	for _, name := range names {
		iface := m[name]
		if name == "" || iface == "" {
			return fmt.Errorf("%q=%q: want name=interface", name, iface)
		}
		if other, ok := by[iface]; ok {
			return fmt.Errorf("%s=%s and %s=%s map two physical networks to one interface", other, iface, name, iface)
		}
		by[iface] = name
	}
	return nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func runAgent(f *agentFlags, out io.Writer) error {
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	f.cfg.Logger = log
	if f.cfg.TrustedProxies, err = parseProxies(f.proxies); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	if err := checkPhysnets(f.cfg.Agent.Physnets); err != nil {
		return fmt.Errorf("--physnet: %w", err)
	}
	if tok := os.Getenv("PEERSTACK_JOIN_TOKEN"); tok != "" && f.cfg.JoinToken == "" {
		// The service's env file carries the token of a join not yet done;
		// once the data dir holds a member, the token is spent.
		if _, err := node.LocalAPIAddr(f.cfg.DataDir); err != nil {
			f.cfg.JoinToken = tok
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.cfg.Agent.GuardCommand, f.cfg.Agent.Watchdog, err = f.watchdog.guard(guardCommand()); err != nil {
		return err
	}
	n, err := node.Start(ctx, f.cfg)
	if err != nil {
		return err
	}
	if err := sdNotify("READY=1"); err != nil {
		log.Warn("tell systemd we are ready", "err", err)
	}
	if n.AdminPassword != "" {
		fmt.Fprintf(out, "\npeerstack: bootstrapped cluster %s on host %s\n", n.ClusterID(), n.Name())
		fmt.Fprintf(out, "  API:            https://%s\n", n.APIAddr())
		// The password itself goes only to the root-only clouds.yaml, never
		// to the terminal or the journal.
		fmt.Fprintf(out, "  admin password: in %s (readable by root only)\n", n.CloudsYAML())
		fmt.Fprintf(out, "  clouds.yaml:    %s\n", n.CloudsYAML())
		fmt.Fprintf(out, "  try:            export OS_CLIENT_CONFIG_FILE=%s OS_CLOUD=peerstack; openstack token issue\n\n", n.CloudsYAML())
	} else {
		fmt.Fprintf(out, "peerstack: host %s (%s) serving https://%s in cluster %s\n", n.Name(), n.ID(), n.APIAddr(), n.ClusterID())
	}
	select {
	case <-ctx.Done():
		log.Info("stopping (VMs keep running)")
	case <-n.Left():
	}
	_ = sdNotify("STOPPING=1")
	n.Stop()
	return nil
}

func agentCmd() *cobra.Command {
	f := &agentFlags{}
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run this host's daemon: bootstrap a new cluster on an empty data dir, or resume",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return runAgent(f, c.OutOrStdout()) },
	}
	addAgentFlags(c, f)
	return c
}

func joinCmd() *cobra.Command {
	f := &agentFlags{}
	var foreground bool
	var envFile string
	c := &cobra.Command{
		Use:   "join TOKEN",
		Short: "Join an existing cluster with a token from `peerstack token create`, then run the daemon",
		Args:  cobra.ExactArgs(1),
		Long: "join makes this host a member of the cluster the token names. Where the peerstack\n" +
			"package installed its systemd unit (and --data-dir is left at its default), join hands\n" +
			"the host to peerstack.service and returns once it is a member; otherwise, or with\n" +
			"--foreground, it runs the daemon in this process.",
		RunE: func(c *cobra.Command, args []string) error {
			f.cfg.JoinToken = args[0]
			if unitInstalled() && !foreground && !c.Flags().Changed("data-dir") {
				return joinAsService(c.Context(), c.Flags(), f, envFile, c.OutOrStdout())
			}
			return runAgent(f, c.OutOrStdout())
		},
	}
	addAgentFlags(c, f)
	c.Flags().BoolVar(&foreground, "foreground", false, "run the daemon in this process even where the service is installed")
	c.Flags().StringVar(&envFile, "env-file", defaultEnvFile, "the service's environment file (service mode)")
	return c
}

func connect(ctx context.Context, o client.Options) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return client.FromEnv(ctx, o)
}

// clusterGet authenticates from the environment and reads path of the
// cluster API into out.
func clusterGet(ctx context.Context, path string, out any) error {
	cl, err := connect(ctx, client.Options{})
	if err != nil {
		return err
	}
	return cl.Do(ctx, "GET", path, nil, out)
}

func tokenCmd() *cobra.Command {
	var ttl string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a single-use join token (admin); printed alone on the last line",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			cl, err := connect(ctx, client.Options{})
			if err != nil {
				return err
			}
			var resp struct {
				Token struct {
					Token     string `json:"token"`
					ExpiresAt string `json:"expires_at"`
				} `json:"token"`
			}
			if err := cl.Do(ctx, "POST", "/tokens", map[string]string{"ttl": ttl}, &resp); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "# join token, single use, expires %s; on the new host run: peerstack join <token>\n%s\n",
				resp.Token.ExpiresAt, resp.Token.Token)
			return nil
		},
	}
	create.Flags().StringVar(&ttl, "ttl", "1h", "how long the token stays valid")
	tok := &cobra.Command{Use: "token", Short: "Join tokens"}
	tok.AddCommand(create)
	return tok
}

func membersCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "members",
		Short: "List the cluster's hosts: addresses, Raft role, gossip state, capacity",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var resp struct {
				Members []cluster.Member `json:"members"`
			}
			if err := clusterGet(c.Context(), "/members", &resp); err != nil {
				return err
			}
			if resp.Members == nil {
				resp.Members = []cluster.Member{}
			}
			if format == "json" {
				return printJSON(c.OutOrStdout(), resp.Members)
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tID\tAPI\tRAFT ROLE\tGOSSIP\tVCPUS\tRAM MB\tDISK GB\tACCEL\tCLOCK SKEW")
			for _, m := range resp.Members {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%d/%d\t%d/%d\t%s\t%s\n", m.Name, m.ID, m.APIAddr, m.RaftRole, m.GossipState,
					m.Capacity.UsedVCPUs, m.Capacity.VCPUs, m.Capacity.UsedRAMMB, m.Capacity.RAMMB, m.Capacity.UsedDiskGB, m.Capacity.DiskGB, m.Accel,
					formatSkew(m.ClockSkewMS))
			}
			return w.Flush()
		},
	}
	c.Flags().StringVarP(&format, "format", "f", "table", "table or json")
	c.AddCommand(membersRemoveCmd())
	return c
}

// membersRemoveCmd removes another member (dead or compromised) and
// revokes its certificates: every host refuses them from then on.
func membersRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove <member-id>",
		Short: "Remove another host from the cluster and revoke its certificates (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			cl, err := connect(ctx, client.Options{})
			if err != nil {
				return err
			}
			if err := cl.Do(ctx, "DELETE", "/members/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "peerstack: member %s removed; its certificates are revoked\n", args[0])
			return nil
		},
	}
}

func statusCmd() *cobra.Command {
	var format string
	var digest bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the leader, term, applied index and this host",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var resp struct {
				Status cluster.Status `json:"status"`
			}
			path := "/status"
			if digest {
				path += "?digest=true"
			}
			if err := clusterGet(c.Context(), path, &resp); err != nil {
				return err
			}
			if format == "json" {
				return printJSON(c.OutOrStdout(), resp.Status)
			}
			s := resp.Status
			fmt.Fprintf(c.OutOrStdout(), "cluster:  %s\nleader:   %s (%s, %s)\nterm:     %d\napplied:  %d\nthis host: %s (%s), raft %s\nmembers:  %d\n",
				s.ClusterID, s.Leader.Name, s.Leader.ID, s.Leader.APIAddr, s.Term, s.AppliedIndex, s.Self.Name, s.Self.ID, s.RaftState, s.Members)
			if digest {
				fmt.Fprintf(c.OutOrStdout(), "state:    sha256 %s at index %d\n", s.StateDigest, s.StateIndex)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&format, "format", "f", "table", "table or json")
	c.Flags().BoolVar(&digest, "digest", false, "also show the SHA-256 of this host's replicated state (equal on hosts that agree)")
	return c
}

func leaveCmd() *cobra.Command {
	var dataDir string
	var evacuate bool
	c := &cobra.Command{
		Use:   "leave",
		Short: "Take this host out of the cluster gracefully (its daemon then stops)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			addr, err := node.LocalAPIAddr(dataDir)
			if err != nil {
				return fmt.Errorf("find this host's daemon in %s: %w", dataDir, err)
			}
			cl, err := connect(ctx, client.Options{BaseURL: "https://" + addr})
			if err != nil {
				return err
			}
			if evacuate {
				fmt.Fprintln(c.OutOrStdout(), "peerstack: stopping this host's servers and restarting them on other hosts")
				if err := drainHost(ctx, cl); err != nil {
					return err
				}
			}
			if err := cl.Do(ctx, "POST", "/leave", nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), "peerstack: this host is leaving the cluster; its daemon stops once the others have let it go")
			return nil
		},
	}
	c.Flags().StringVar(&dataDir, "data-dir", node.DefaultDataDir, "this host's data dir (to find its daemon)")
	c.Flags().BoolVar(&evacuate, "evacuate", false, "first stop this host's servers and restart them on other hosts (every disk must be on shared storage)")
	return c
}

// drainHost starts this host's drain and waits until it is over: the
// daemon answers the request once the drain is under way and shows its
// progress at GET /drain.
func drainHost(ctx context.Context, cl *client.Client) error {
	var out struct {
		Drain struct {
			Status  string `json:"status"` // draining, drained or failed
			Message string `json:"message"`
		} `json:"drain"`
	}
	if err := cl.Do(ctx, "POST", "/drain", nil, &out); err != nil {
		return err
	}
	for out.Drain.Status == "draining" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: %w", ctx.Err())
		case <-time.After(time.Second):
		}
		if err := cl.Do(ctx, "GET", "/drain", nil, &out); err != nil {
			return err
		}
	}
	if out.Drain.Status != "drained" {
		return fmt.Errorf("drain %s: %s", out.Drain.Status, out.Drain.Message)
	}
	return nil
}

func versionCmd() *cobra.Command {
	return &cobra.Command{Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(c *cobra.Command, _ []string) { fmt.Fprintln(c.OutOrStdout(), "peerstack", node.Version) }}
}

// formatSkew prints a member's clock skew: "+12ms", "-3600.2s", or "-"
// when not measured.
func formatSkew(ms *int64) string {
	switch {
	case ms == nil:
		return "-"
	case *ms > -1000 && *ms < 1000:
		return fmt.Sprintf("%+dms", *ms)
	}
	return fmt.Sprintf("%+.1fs", float64(*ms)/1000)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
