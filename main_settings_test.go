package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/node/nodetest"
	"github.com/peerstack/peerstack/rest/cluster"
)

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1073741824", 1 << 30, true},
		{"2GiB", 2 << 30, true},
		{"2gib", 2 << 30, true},
		{"2G", 2 << 30, true},
		{"512MiB", 512 << 20, true},
		{"512 MiB", 512 << 20, true},
		{"1TiB", 1 << 40, true},
		{"3KB", 3000, true},
		{"1.5GB", 1_500_000_000, true},
		{"1.5GiB", 3 << 29, true},
		{"10B", 10, true},
		{"", 0, false},
		{"GiB", 0, false},
		{"-1", 0, false},
		{"-1GiB", 0, false},
		{"2XB", 0, false},
		{"9223372036854775807", 1<<63 - 1, true},
		{"9000000TiB", 0, false},
		{"1e30", 0, false},
		{"NaN", 0, false},
	} {
		got, err := parseByteSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseSettingsArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want map[string]any
	}{
		{[]string{"storage=nfs://nas/export", "image-copies=3", "image-size-limit=2GiB"},
			map[string]any{"storage": "nfs://nas/export", "image_copies": 3, "image_size_limit": int64(2 << 30)}},
		{[]string{"storage=local"}, map[string]any{"storage": ""}},
		{[]string{"storage="}, map[string]any{"storage": ""}},
		{[]string{"image_copies=1", "IMAGE-SIZE-LIMIT=0"}, map[string]any{"image_copies": 1, "image_size_limit": int64(0)}},
		{[]string{"storage"}, nil},
		{[]string{"mtu=9000"}, nil},
		{[]string{"image-copies=0"}, nil},
		{[]string{"image-copies=two"}, nil},
		{[]string{"image-size-limit=big"}, nil},
		{[]string{"image-copies=2", "image_copies=3"}, nil},
		{[]string{"quota.instances=20", "quota.key_pairs=-1"}, map[string]any{"quotas": map[string]int64{"instances": 20, "key_pairs": -1}}},
		{[]string{"quota.instances=-2"}, nil},
		{[]string{"quota.instances=many"}, nil},
	} {
		got, err := parseSettingsArgs(tc.args)
		if tc.want == nil {
			if err == nil {
				t.Errorf("parseSettingsArgs(%q) = %v; want an error", tc.args, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseSettingsArgs(%q) = %v, %v; want %v", tc.args, got, err, tc.want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{0, "0 bytes"}, {1000, "1000 bytes"}, {1024, "1 KiB"}, {3 << 29, "1536 MiB"}, {64 << 30, "64 GiB"}, {2 << 40, "2 TiB"},
	} {
		if got := formatBytes(tc.in); got != tc.want {
			t.Errorf("formatBytes(%d) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// runCLI runs the peerstack command line in this process.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := rootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// TestSettingsCLI drives `peerstack settings show|set` against a one-host
// cluster, authenticated from a clouds.yaml as an operator would be.
func TestSettingsCLI(t *testing.T) {
	c := nodetest.NewCluster(t, 1)
	for _, kv := range c.OpenStackEnv(t, 0) {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OS_") || k == "HOME" {
			t.Setenv(k, v)
		}
	}
	out, err := runCLI(t, "settings", "show")
	if err != nil || !strings.Contains(out, "local (a directory on each host)") || !strings.Contains(out, "64 GiB (68719476736 bytes)") {
		t.Fatalf("settings show = %q, %v; want local storage and the 64 GiB default", out, err)
	}
	out, err = runCLI(t, "settings", "set", "image-copies=3", "image-size-limit=2GiB", "-f", "json")
	if err != nil {
		t.Fatalf("settings set = %q, %v", out, err)
	}
	var got cluster.Settings
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("settings set -f json printed %q: %v", out, err)
	}
	want := cluster.Settings{StorageType: "local", FormerStorage: []string{}, ImageCopies: 3, ImageSizeLimit: 2 << 30}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("settings set -f json = %+v; want %+v", got, want)
	}
	cfg, _ := c.Node(0).State().Cluster()
	if cfg.Settings.ImageCopies != 3 || cfg.Settings.ImageSizeLimit != 2<<30 {
		t.Fatalf("state settings = %+v; want the CLI's values", cfg.Settings)
	}
	out, err = runCLI(t, "settings", "show", "-f", "json")
	got = cluster.Settings{}
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("settings show -f json = %q, %v; want %+v", out, err, want)
	}
	// The server's refusal reaches the operator with its reason.
	_, err = runCLI(t, "settings", "set", "storage=nfs://nas")
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "nfs://server/export") {
		t.Fatalf("settings set storage=nfs://nas = %v; want the 400 with the expected form", err)
	}
	if cfg, _ := c.Node(0).State().Cluster(); cfg.Settings.Storage != "" {
		t.Fatalf("storage = %q after a refused change; want local", cfg.Settings.Storage)
	}
}
