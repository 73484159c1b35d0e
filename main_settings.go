package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/peerstack/peerstack/rest/client"
	"github.com/peerstack/peerstack/rest/cluster"
)

// settingsCmd is `peerstack settings show|set`: the cluster-wide settings
// an admin changes at runtime through the cluster API.
func settingsCmd() *cobra.Command {
	var format string
	show := &cobra.Command{
		Use:   "show",
		Short: "Show the cluster-wide settings: storage backend, image copies, image size limit",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var resp struct {
				Settings cluster.Settings `json:"settings"`
			}
			if err := clusterGet(c.Context(), "/settings", &resp); err != nil {
				return err
			}
			return printSettings(c.OutOrStdout(), format, resp.Settings)
		},
	}
	show.Flags().StringVarP(&format, "format", "f", "table", "table or json")

	set := &cobra.Command{
		Use:   "set KEY=VALUE...",
		Short: "Change cluster-wide settings (admin): storage, image-copies, image-size-limit, quota.*",
		Long: `Change cluster-wide settings (admin). Only the keys given change.

  storage=nfs://server/export[/path]  new volumes and images go to this NFS share;
                                      the API host first checks it can write there
  storage=local                       new volumes and images go to a directory on each host
  image-copies=N                      hosts holding each image with local storage (>= 1)
  image-size-limit=SIZE               largest image upload: bytes, or with a unit
                                      (KiB, MiB, GiB, TiB; KB, MB, GB, TB); 0 = the default
  quota.RESOURCE=N                    default quota of every project without its own, e.g.
                                      quota.instances=20 quota.gigabytes=500 (-1 = unlimited;
                                      resources in docs/limits.md)

Volumes and images made before a storage change stay where they were made.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			patch, err := parseSettingsArgs(args)
			if err != nil {
				return err
			}
			ctx := c.Context()
			cl, err := connect(ctx, client.Options{})
			if err != nil {
				return err
			}
			var resp struct {
				Settings cluster.Settings `json:"settings"`
			}
			if err := cl.Do(ctx, "PATCH", "/settings", patch, &resp); err != nil {
				return err
			}
			return printSettings(c.OutOrStdout(), format, resp.Settings)
		},
	}
	set.Flags().StringVarP(&format, "format", "f", "table", "table or json")

	s := &cobra.Command{Use: "settings", Short: "Cluster-wide settings changeable at runtime"}
	s.AddCommand(show, set)
	return s
}

// parseSettingsArgs turns KEY=VALUE arguments into the PATCH body of
// /cluster/v1/settings.
func parseSettingsArgs(args []string) (map[string]any, error) {
	patch := map[string]any{}
	seen := map[string]bool{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want KEY=VALUE", a)
		}
		k = strings.ReplaceAll(strings.ToLower(strings.TrimSpace(k)), "_", "-")
		v = strings.TrimSpace(v)
		if seen[k] {
			return nil, fmt.Errorf("setting %s given twice", k)
		}
		seen[k] = true
		switch k {
		case "storage":
			if v == "local" {
				v = ""
			}
			patch["storage"] = v
		case "image-copies":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("image-copies=%s: want a whole number >= 1", v)
			}
			patch["image_copies"] = n
		case "image-size-limit":
			n, err := parseByteSize(v)
			if err != nil {
				return nil, fmt.Errorf("image-size-limit=%s: %w", v, err)
			}
			patch["image_size_limit"] = n
		case "fence-timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return nil, fmt.Errorf("fence-timeout=%s: want a duration such as 10s (0 = the default)", v)
			}
			patch["fence_timeout"] = d.Seconds()
		case "ha":
			on, err := strconv.ParseBool(strings.NewReplacer("on", "true", "off", "false").Replace(v))
			if err != nil {
				return nil, fmt.Errorf("ha=%s: want on or off", v)
			}
			patch["ha_disabled"] = !on
		default:
			if res, ok := strings.CutPrefix(k, "quota."); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < -1 {
					return nil, fmt.Errorf("%s=%s: want a whole number >= 0, or -1 for unlimited", k, v)
				}
				q, _ := patch["quotas"].(map[string]int64)
				if q == nil {
					q = map[string]int64{}
					patch["quotas"] = q
				}
				q[strings.ReplaceAll(res, "-", "_")] = n
				continue
			}
			return nil, fmt.Errorf("unknown setting %q: the settings are storage, image-copies, image-size-limit and quota.RESOURCE", k)
		}
	}
	return patch, nil
}

// byteUnits are the size suffixes parseByteSize knows.
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// parseByteSize reads "1073741824", "512MiB", "2GiB", "2G" (= GiB) or
// "1.5GB" (powers of 1000) as a number of bytes.
func parseByteSize(s string) (int64, error) {
	t := strings.ToLower(strings.ReplaceAll(s, " ", ""))
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n < 0 || (n > 0 && mult > math.MaxInt64/n) {
			return 0, fmt.Errorf("want a size from 0 to %d bytes", int64(math.MaxInt64))
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsNaN(f) || f*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("want a size in bytes, like 1073741824, 512MiB or 2GiB")
	}
	return int64(f * float64(mult)), nil
}

// formatBytes writes n in the largest binary unit that divides it.
func formatBytes(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return fmt.Sprintf("%d %s", n/u.mult, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

func printSettings(w io.Writer, format string, s cluster.Settings) error {
	if format == "json" {
		return printJSON(w, s)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	storage := s.Storage + " (nfs)"
	if s.Storage == "" {
		storage = "local (a directory on each host)"
	}
	fmt.Fprintf(tw, "storage:\t%s\n", storage)
	if len(s.FormerStorage) > 0 {
		fmt.Fprintf(tw, "former storage:\t%s (volumes and images made there stay there)\n", strings.Join(s.FormerStorage, ", "))
	}
	fmt.Fprintf(tw, "image copies:\t%d\n", s.ImageCopies)
	fmt.Fprintf(tw, "image size limit:\t%s (%d bytes)\n", formatBytes(s.ImageSizeLimit), s.ImageSizeLimit)
	fence := "10s (the default)"
	if s.FenceTimeout > 0 {
		fence = fmt.Sprintf("%gs", s.FenceTimeout)
	}
	fmt.Fprintf(tw, "fence timeout:\t%s, HA %s\n", fence, map[bool]string{false: "on", true: "off"}[s.HADisabled])
	for _, k := range slices.Sorted(maps.Keys(s.Quotas)) {
		fmt.Fprintf(tw, "default quota %s:\t%d\n", k, s.Quotas[k])
	}
	return tw.Flush()
}
