package qemu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/kdomanski/iso9660"
)

// ConfigDriveLabel is the ISO9660 volume label cloud-init (and the test
// guest) look for.
const ConfigDriveLabel = "config-2"

// ConfigDrive is the content of an OpenStack config drive.
type ConfigDrive struct {
	UUID             string
	Hostname         string
	Name             string
	AvailabilityZone string
	ProjectID        string            // optional
	LaunchIndex      int               // the server's index in its create request (meta_data.json launch_index)
	PublicKeys       map[string]string // key name → OpenSSH public key
	Meta             map[string]string // server metadata
	UserData         []byte            // written as openstack/*/user_data when non-empty
	NetworkData      any               // JSON-able network_data.json; nil → no links, networks or services
}

// isoPadding is appended to the image (after the ISO9660 volume).
const isoPadding = 150 * 2048

// configDriveVersions are the openstack/<version> directories written; each
// holds the same files.
var configDriveVersions = []string{"2012-08-10", "latest"}

// metaData is openstack/*/meta_data.json. The field order is the file's key
// order; the guest image reads top-level keys line by line.
type metaData struct {
	UUID             string            `json:"uuid"`
	Hostname         string            `json:"hostname"`
	Name             string            `json:"name"`
	AvailabilityZone string            `json:"availability_zone"`
	ProjectID        string            `json:"project_id,omitempty"`
	LaunchIndex      int               `json:"launch_index"`
	PublicKeys       map[string]string `json:"public_keys"`
	Keys             []metaKey         `json:"keys"`
	Meta             map[string]string `json:"meta"`
}

type metaKey struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Data string `json:"data"`
}

// metaDataJSON renders meta_data.json: indented, one top-level key per line,
// keys of maps sorted, so the output is stable.
func metaDataJSON(cd ConfigDrive) ([]byte, error) {
	md := metaData{
		UUID:             cd.UUID,
		Hostname:         cd.Hostname,
		Name:             cd.Name,
		AvailabilityZone: cd.AvailabilityZone,
		ProjectID:        cd.ProjectID,
		LaunchIndex:      cd.LaunchIndex,
		PublicKeys:       cd.PublicKeys,
		Keys:             []metaKey{},
		Meta:             cd.Meta,
	}
	if md.PublicKeys == nil {
		md.PublicKeys = map[string]string{}
	}
	if md.Meta == nil {
		md.Meta = map[string]string{}
	}
	for _, name := range slices.Sorted(maps.Keys(cd.PublicKeys)) {
		md.Keys = append(md.Keys, metaKey{Name: name, Type: "ssh", Data: cd.PublicKeys[name]})
	}
	b, err := json.MarshalIndent(md, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// configDriveFiles returns the files of the drive, path → content.
func configDriveFiles(cd ConfigDrive) (map[string][]byte, error) {
	if cd.UUID == "" {
		return nil, fmt.Errorf("config drive: empty uuid")
	}
	md, err := metaDataJSON(cd)
	if err != nil {
		return nil, fmt.Errorf("config drive: meta_data.json: %w", err)
	}
	nd := cd.NetworkData
	if nd == nil {
		nd = map[string]any{"links": []any{}, "networks": []any{}, "services": []any{}}
	}
	ndb, err := json.MarshalIndent(nd, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("config drive: network_data.json: %w", err)
	}
	files := map[string][]byte{}
	for _, v := range configDriveVersions {
		dir := "openstack/" + v + "/"
		files[dir+"meta_data.json"] = md
		files[dir+"network_data.json"] = append(ndb, '\n')
		files[dir+"vendor_data.json"] = []byte("{}\n")
		if len(cd.UserData) > 0 {
			files[dir+"user_data"] = cd.UserData
		}
	}
	return files, nil
}

// WriteConfigDrive writes an OpenStack config drive ISO (volume label
// config-2, plain ISO9660) to path, replacing it atomically. Files, under
// both openstack/latest/ and openstack/2012-08-10/: meta_data.json,
// network_data.json, vendor_data.json ("{}") and user_data (if any).
//
// The names survive plain ISO9660 without Rock Ridge or Joliet: the library
// writes lower-case identifiers with a ";1" version (meta_data.json;1), which
// Linux's isofs shows as meta_data.json; all our names are already lower
// case, at most 30 characters and made of d1-characters.
func WriteConfigDrive(path string, cd ConfigDrive) error {
	files, err := configDriveFiles(cd)
	if err != nil {
		return err
	}
	w, err := iso9660.NewWriter()
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	defer w.Cleanup()
	for name, data := range files {
		if err := w.AddFile(bytes.NewReader(data), name); err != nil {
			return fmt.Errorf("config drive: add %s: %w", name, err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.iso")
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := w.WriteTo(tmp, ConfigDriveLabel); err != nil {
		tmp.Close()
		return fmt.Errorf("config drive: write %s: %w", path, err)
	}
	// Pad like mkisofs (150 zero sectors): probes such as busybox's findfs
	// read a fixed 68 KiB window and skip smaller devices, and a tiny drive
	// is smaller than that.
	if _, err := tmp.Write(make([]byte, isoPadding)); err != nil {
		tmp.Close()
		return fmt.Errorf("config drive: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("config drive: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	return nil
}
