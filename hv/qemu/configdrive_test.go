package qemu

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kdomanski/iso9660"
)

func testConfigDrive() ConfigDrive {
	return ConfigDrive{
		UUID:             testUUID,
		Hostname:         "web-1",
		Name:             "web 1",
		AvailabilityZone: "nova",
		ProjectID:        "6f1c0b7e2d4a4c1f9e8d7c6b5a4f3e2d",
		LaunchIndex:      2,
		PublicKeys:       map[string]string{"mykey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1 me@host", "another": "ssh-rsa AAAAB3 x@y"},
		Meta:             map[string]string{"role": "web", "disktest": "write"},
		UserData:         []byte("#!/bin/sh\necho hello\n"),
		NetworkData: map[string]any{
			"links":    []any{map[string]any{"id": "tap0", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01", "mtu": 1450}},
			"networks": []any{map[string]any{"id": "net0", "link": "tap0", "type": "ipv4_dhcp"}},
			"services": []any{},
		},
	}
}

func TestMetaDataGolden(t *testing.T) {
	b, err := metaDataJSON(testConfigDrive())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "meta_data.json", b)

	minimal, err := metaDataJSON(ConfigDrive{UUID: testUUID, Hostname: "h", Name: "h"})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "meta_data-minimal.json", minimal)

	// The guest reads top-level keys line by line: each must be alone on
	// its line with two spaces of indentation.
	for _, k := range []string{"uuid", "hostname", "name"} {
		if !strings.Contains(string(minimal), "\n  \""+k+"\": ") {
			t.Errorf("meta_data.json: key %q not on its own indented line:\n%s", k, minimal)
		}
	}
}

// readISO returns every file of an ISO (path → content) and its label.
func readISO(t *testing.T, path string) (map[string]string, string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := iso9660.OpenImage(f)
	if err != nil {
		t.Fatalf("OpenImage(%s) = %v", path, err)
	}
	label, err := img.Label()
	if err != nil {
		t.Fatal(err)
	}
	root, err := img.RootDir()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	var walk func(dir *iso9660.File, prefix string)
	walk = func(dir *iso9660.File, prefix string) {
		kids, err := dir.GetChildren()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range kids {
			name := prefix + k.Name()
			if k.IsDir() {
				walk(k, name+"/")
				continue
			}
			b, err := io.ReadAll(k.Reader())
			if err != nil {
				t.Fatal(err)
			}
			files[name] = string(b)
		}
	}
	walk(root, "")
	return files, label
}

func TestWriteConfigDriveReadBack(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.iso")
	cd := testConfigDrive()
	if err := WriteConfigDrive(path, cd); err != nil {
		t.Fatalf("WriteConfigDrive = %v", err)
	}
	files, label := readISO(t, path)
	if label != ConfigDriveLabel {
		t.Errorf("label = %q; want %q", label, ConfigDriveLabel)
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	want := []string{
		"openstack/2012-08-10/meta_data.json", "openstack/2012-08-10/network_data.json",
		"openstack/2012-08-10/user_data", "openstack/2012-08-10/vendor_data.json",
		"openstack/latest/meta_data.json", "openstack/latest/network_data.json",
		"openstack/latest/user_data", "openstack/latest/vendor_data.json",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("ISO files = %q; want %q (names must survive ISO9660 unmangled)", names, want)
	}
	md, _ := metaDataJSON(cd)
	if got := files["openstack/latest/meta_data.json"]; got != string(md) {
		t.Errorf("meta_data.json = %q; want %q", got, md)
	}
	var meta map[string]any
	if err := json.Unmarshal([]byte(files["openstack/latest/meta_data.json"]), &meta); err != nil {
		t.Fatalf("meta_data.json is not JSON: %v", err)
	}
	if meta["uuid"] != testUUID || meta["hostname"] != "web-1" || meta["launch_index"] != float64(2) {
		t.Errorf("meta_data.json = %v", meta)
	}
	if got := files["openstack/latest/user_data"]; got != string(cd.UserData) {
		t.Errorf("user_data = %q; want %q", got, cd.UserData)
	}
	if got := files["openstack/latest/vendor_data.json"]; strings.TrimSpace(got) != "{}" {
		t.Errorf("vendor_data.json = %q; want {}", got)
	}
	var nd map[string]any
	if err := json.Unmarshal([]byte(files["openstack/latest/network_data.json"]), &nd); err != nil || len(nd["links"].([]any)) != 1 {
		t.Errorf("network_data.json = %q, %v", files["openstack/latest/network_data.json"], err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size()%2048 != 0 {
		t.Errorf("ISO size %v, %v: want a multiple of 2048", fi, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left in %s: %v", dir, ents)
	}
}

func TestWriteConfigDriveNoUserData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.iso")
	if err := WriteConfigDrive(path, ConfigDrive{UUID: testUUID, Hostname: "h"}); err != nil {
		t.Fatal(err)
	}
	files, _ := readISO(t, path)
	if _, ok := files["openstack/latest/user_data"]; ok {
		t.Errorf("user_data written without user data")
	}
	if got := strings.TrimSpace(files["openstack/latest/network_data.json"]); !strings.Contains(got, `"links": []`) {
		t.Errorf("default network_data.json = %q", got)
	}
	if err := WriteConfigDrive(path, ConfigDrive{}); err == nil {
		t.Errorf("WriteConfigDrive(no uuid) = nil; want error")
	}
}
