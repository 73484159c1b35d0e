package qemu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
)

// MaxNICs is the number of NICs a VM may have.
const MaxNICs = 8

// NIC is one virtio-net interface backed by a tap device that already exists
// (or that QEMU creates, as root) on the host.
type NIC struct {
	ID  string // port id; the QEMU device id is "nic-<ID>"
	Tap string // host tap interface name (at most 15 bytes)
	MAC string // unicast, 6 bytes; normalised to lower case
}

// Disk is one block device: a local file or an nfs://host/export/path URL
// (reached by QEMU through libnfs, no kernel mount).
type Disk struct {
	ID       string // volume id; extra disks get the QEMU device id "vol-<ID>"
	Path     string // absolute file path or nfs:// URL
	Format   string // "qcow2" (the default when empty) or "raw"
	ReadOnly bool
}

// Spec is everything needed to build a VM's command line. It is stored as
// spec.json in the VM's directory so that a soft reboot or a restart after a
// crash starts the same VM again.
type Spec struct {
	UUID        string // instance uuid; also -uuid and -name guest=peerstack-<uuid>
	Name        string // display name (not on the command line)
	VCPUs       int
	RAMMB       int
	Arch        string // "x86_64" or "aarch64"; default the host's (HostArch)
	Machine     string // default "pc" on x86_64, "virt" on aarch64
	Firmware    string // aarch64 only: UEFI image for -bios; default AArch64Firmware
	RootDisk    Disk   // virtio-blk, bootindex=0
	Ephemeral   string // path of the flavor's blank ephemeral qcow2 disk, optional (virtio-blk right after the root disk: vdb, serial ephemeral0)
	ConfigDrive string // path of the config-drive ISO, optional (read-only virtio-blk)
	NICs        []NIC  // at most MaxNICs
	ExtraDisks  []Disk // volumes attached at boot; device ids "vol-<ID>", same as hot-plugged ones
	// Rescue mode (rescue.go): RootDisk is the rescue disk and this, the
	// VM's own root disk, comes right after it (vdb, serial "root").
	RescuedRoot *Disk `json:",omitempty"`
}

// Guest architectures.
const (
	ArchX86    = "x86_64"
	ArchARM64  = "aarch64"
	archOfHost = "" // normalize fills in HostArch()
)

// AArch64Firmware is the UEFI firmware Debian's qemu-efi-aarch64 installs;
// aarch64 guests boot from it (the virt machine has no legacy BIOS).
const AArch64Firmware = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"

// HostArch is the QEMU architecture name of the machine this runs on.
func HostArch() string {
	if runtime.GOARCH == "arm64" {
		return ArchARM64
	}
	return ArchX86
}

// DefaultBinary is the QEMU system emulator for the host's architecture.
func DefaultBinary() string { return "qemu-system-" + HostArch() }

// Paths names the files of one VM. Every VM lives in its own directory.
type Paths struct{ Dir string }

// QMPSocket is the QMP control socket: qmp.sock in the VM's directory, or,
// when that path is too long for a unix socket (a deep data dir), a file
// in ShortSocketDir named after a hash of the VM's directory — the same
// name every time, so a restarted daemon finds a running QEMU again.
func (p Paths) QMPSocket() string {
	if in := filepath.Join(p.Dir, "qmp.sock"); len(in) <= maxSocketPath {
		return in
	}
	sum := sha256.Sum256([]byte(filepath.Clean(p.Dir)))
	return filepath.Join(ShortSocketDir, "qmp-"+hex.EncodeToString(sum[:12])+".sock")
}

// ShortSocketDir holds the QMP sockets of VMs whose directories are too
// deep for a unix socket path. /run is not cleaned while the host runs
// (unlike /tmp), and a VM does not outlive a reboot either.
const ShortSocketDir = "/run/peerstack"

// ConsoleLog is the serial console log, written by QEMU (append mode).
func (p Paths) ConsoleLog() string { return filepath.Join(p.Dir, "console.log") }

// PIDFile is QEMU's pidfile.
func (p Paths) PIDFile() string { return filepath.Join(p.Dir, "qemu.pid") }

// SpecFile is the JSON copy of the Spec the VM was started with.
func (p Paths) SpecFile() string { return filepath.Join(p.Dir, "spec.json") }

// RootDisk is the default location of the VM's root overlay.
func (p Paths) RootDisk() string { return filepath.Join(p.Dir, "root.qcow2") }

// Ephemeral is the location of the VM's ephemeral disk (CreateEphemeralDisk).
func (p Paths) Ephemeral() string { return filepath.Join(p.Dir, "ephemeral.qcow2") }

// ConfigDrive is the default location of the VM's config-drive ISO.
func (p Paths) ConfigDrive() string { return filepath.Join(p.Dir, "config.iso") }

// QEMULog receives QEMU's own stdout and stderr.
func (p Paths) QEMULog() string { return filepath.Join(p.Dir, "qemu.log") }

// Accel is a QEMU accelerator.
type Accel string

// Accelerators.
const (
	AccelKVM Accel = "kvm"
	AccelTCG Accel = "tcg"
)

// ErrInvalidSpec is wrapped by every validation error of BuildArgs.
var ErrInvalidSpec = errors.New("invalid vm spec")

var (
	uuidRE    = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	idRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	tapRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)
	machineRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
)

// maxSocketPath is sizeof(sockaddr_un.sun_path) minus the NUL.
const maxSocketPath = 107

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, a...))
}

// ValidateMAC checks that mac is a 6-byte unicast address and returns it in
// canonical lower-case form.
func ValidateMAC(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", invalid("mac %q: not a 6-byte MAC address", mac)
	}
	if hw[0]&1 != 0 {
		return "", invalid("mac %q: multicast/broadcast bit set", mac)
	}
	if string(hw) == string(make([]byte, 6)) {
		return "", invalid("mac %q: all zero", mac)
	}
	return hw.String(), nil
}

// normalize validates s and fills defaults. It never touches the host.
func (s Spec) normalize() (Spec, error) {
	if !uuidRE.MatchString(s.UUID) {
		return s, invalid("uuid %q: not a canonical uuid", s.UUID)
	}
	s.UUID = strings.ToLower(s.UUID)
	if s.VCPUs < 1 || s.VCPUs > 255 {
		return s, invalid("vcpus %d: want 1..255", s.VCPUs)
	}
	if s.RAMMB < 16 || s.RAMMB > 4<<20 {
		return s, invalid("ram %d MB: want 16..%d", s.RAMMB, 4<<20)
	}
	if s.Arch == archOfHost {
		s.Arch = HostArch()
	}
	switch s.Arch {
	case ArchX86:
		if s.Firmware != "" {
			return s, invalid("firmware %q: x86_64 guests boot from QEMU's own BIOS", s.Firmware)
		}
		if s.Machine == "" {
			s.Machine = "pc"
		}
	case ArchARM64:
		if s.Machine == "" {
			s.Machine = "virt"
		}
		if s.Firmware == "" {
			s.Firmware = AArch64Firmware
		}
		if !filepath.IsAbs(s.Firmware) || strings.ContainsAny(s.Firmware, ",\n") {
			return s, invalid("firmware %q: not an absolute path", s.Firmware)
		}
	default:
		return s, invalid("arch %q: want %s or %s", s.Arch, ArchX86, ArchARM64)
	}
	if !machineRE.MatchString(s.Machine) {
		return s, invalid("machine %q", s.Machine)
	}
	var err error
	if s.RootDisk, err = s.RootDisk.normalize("root disk"); err != nil {
		return s, err
	}
	if s.RescuedRoot != nil {
		r, err := s.RescuedRoot.normalize("rescued root disk")
		if err != nil {
			return s, err
		}
		s.RescuedRoot = &r
	}
	if s.Ephemeral != "" && !filepath.IsAbs(s.Ephemeral) {
		return s, invalid("ephemeral disk %q: not an absolute path", s.Ephemeral)
	}
	if s.ConfigDrive != "" {
		if !filepath.IsAbs(s.ConfigDrive) {
			return s, invalid("config drive %q: not an absolute path", s.ConfigDrive)
		}
	}
	if len(s.NICs) > MaxNICs {
		return s, invalid("%d NICs: at most %d", len(s.NICs), MaxNICs)
	}
	nics := make([]NIC, len(s.NICs))
	seen := map[string]string{}
	for i, n := range s.NICs {
		if !idRE.MatchString(n.ID) {
			return s, invalid("nic %d: id %q", i, n.ID)
		}
		if !tapRE.MatchString(n.Tap) {
			return s, invalid("nic %s: tap name %q", n.ID, n.Tap)
		}
		if n.MAC, err = ValidateMAC(n.MAC); err != nil {
			return s, fmt.Errorf("nic %s: %w", n.ID, err)
		}
		for _, k := range []string{"id:" + n.ID, "tap:" + n.Tap, "mac:" + n.MAC} {
			if other, dup := seen[k]; dup {
				return s, invalid("nic %s: duplicate %s (also nic %s)", n.ID, k, other)
			}
			seen[k] = n.ID
		}
		nics[i] = n
	}
	s.NICs = nics
	extras := make([]Disk, len(s.ExtraDisks))
	ids := map[string]bool{}
	for i, d := range s.ExtraDisks {
		if !idRE.MatchString(d.ID) {
			return s, invalid("disk %d: id %q", i, d.ID)
		}
		if ids[d.ID] {
			return s, invalid("disk %s: duplicate id", d.ID)
		}
		ids[d.ID] = true
		if extras[i], err = d.normalize("disk " + d.ID); err != nil {
			return s, err
		}
	}
	s.ExtraDisks = extras
	return s, nil
}

func (d Disk) normalize(what string) (Disk, error) {
	switch d.Format {
	case "":
		d.Format = "qcow2"
	case "qcow2", "raw":
	default:
		return d, invalid("%s: format %q: want qcow2 or raw", what, d.Format)
	}
	if strings.HasPrefix(d.Path, "nfs://") {
		if _, err := parseNFS(d.Path); err != nil {
			return d, fmt.Errorf("%s: %w", what, err)
		}
		return d, nil
	}
	if !filepath.IsAbs(d.Path) {
		return d, invalid("%s: path %q: not an absolute path or nfs:// URL", what, d.Path)
	}
	return d, nil
}

// nfsTarget is the libnfs location of an nfs:// disk.
type nfsTarget struct{ Host, Path string }

// parseNFS splits nfs://host/export/path into the host and the absolute path
// on the server. QEMU's nfs driver speaks NFSv3 through the portmapper and
// takes no port, so a port is refused, as are query options.
func parseNFS(raw string) (nfsTarget, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "nfs" {
		return nfsTarget{}, invalid("nfs url %q: %v", raw, err)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nfsTarget{}, invalid("nfs url %q: no host", raw)
	}
	if u.Port() != "" {
		return nfsTarget{}, invalid("nfs url %q: ports are not supported (NFSv3 via the portmapper)", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nfsTarget{}, invalid("nfs url %q: options are not supported", raw)
	}
	p := path.Clean(u.Path)
	if p == "/" || p == "." || strings.Count(p, "/") < 2 {
		return nfsTarget{}, invalid("nfs url %q: want nfs://host/export/file", raw)
	}
	return nfsTarget{Host: u.Hostname(), Path: p}, nil
}

// blockdev returns the -blockdev / blockdev-add argument tree of d with the
// given node name.
func (d Disk) blockdev(node string) map[string]any {
	var file map[string]any
	if strings.HasPrefix(d.Path, "nfs://") {
		t, _ := parseNFS(d.Path) // validated by normalize
		file = map[string]any{
			"driver": "nfs",
			"server": map[string]any{"type": "inet", "host": t.Host},
			"path":   t.Path,
		}
	} else {
		file = map[string]any{"driver": "file", "filename": d.Path}
	}
	if d.ReadOnly {
		file["read-only"] = true
	}
	format := d.Format
	if format == "" {
		format = "qcow2"
	}
	b := map[string]any{"driver": format, "node-name": node, "file": file}
	if d.ReadOnly {
		b["read-only"] = true
	}
	return b
}

// VolumeDeviceID is the QEMU device id of an extra (volume) disk.
func VolumeDeviceID(diskID string) string { return "vol-" + diskID }

// volumeNodeName is the block node name of an extra disk. Node names are
// limited to 31 characters, so long ids are shortened with a hash suffix.
func volumeNodeName(diskID string) string {
	n := "vol-" + diskID
	if len(n) <= 31 {
		return n
	}
	return fmt.Sprintf("vol-%s-%08x", diskID[:min(len(diskID), 17)], fnv32(diskID))
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

func mustJSON(v any) string {
	b, err := json.Marshal(v) // maps marshal with sorted keys: stable output
	if err != nil {
		panic(err)
	}
	return string(b)
}

// BuildArgs returns the QEMU arguments (without the binary) for s. It is
// pure: it validates s and p and touches nothing on the host.
//
// The VM gets: the accelerator (TCG adds -cpu max, KVM -cpu host), the
// machine of its architecture (pc on x86_64; virt with UEFI firmware on
// aarch64), no
// default devices and no user config, no display, the serial console on a
// unix socket that QEMU also appends to a log file,
// a QMP socket, a pidfile, the root disk on virtio-blk with
// bootindex=0, the flavor's ephemeral disk (if any) right after it on
// virtio-blk (serial ephemeral0, so it is vdb as in Nova), the config drive
// as a read-only virtio-blk disk (serial config-2), one virtio-net-pci per NIC on a tap with a fixed MAC and no
// option ROM, and the extra disks with the same ids hot-plug uses.
func BuildArgs(s Spec, p Paths, accel Accel) ([]string, error) {
	s, err := s.normalize()
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(p.Dir) {
		return nil, invalid("vm dir %q: not absolute", p.Dir)
	}
	if strings.ContainsAny(p.Dir, ",\n") {
		return nil, invalid("vm dir %q: contains a comma or newline", p.Dir)
	}
	var cpu string
	switch accel {
	case AccelKVM:
		cpu = "host"
	case AccelTCG:
		cpu = "max"
	default:
		return nil, invalid("accelerator %q: want kvm or tcg", accel)
	}
	args := []string{
		"-name", "guest=peerstack-" + s.UUID + ",debug-threads=on",
		"-uuid", s.UUID,
		"-accel", string(accel),
		"-cpu", cpu,
		"-machine", s.Machine,
		"-smp", strconv.Itoa(s.VCPUs),
		"-m", strconv.Itoa(s.RAMMB),
		"-nodefaults",
		"-no-user-config",
		"-display", "none",
		"-chardev", "socket,id=console,path=" + p.ConsoleSocket() + ",server=on,wait=off,logfile=" + p.ConsoleLog() + ",logappend=on",
		"-serial", "chardev:console",
		"-qmp", "unix:" + p.QMPSocket() + ",server=on,wait=off",
		"-pidfile", p.PIDFile(),
	}
	if s.Arch == ArchARM64 {
		// The virt machine boots UEFI from flash; -bios loads it read-only.
		args = append(args, "-bios", s.Firmware)
	}
	args = append(args,
		"-blockdev", mustJSON(s.RootDisk.blockdev("root")),
		"-device", "virtio-blk-pci,drive=root,id=disk-root,bootindex=0",
	)
	if s.RescuedRoot != nil {
		args = append(args,
			"-blockdev", mustJSON(s.RescuedRoot.blockdev("rescued-root")),
			"-device", "virtio-blk-pci,drive=rescued-root,id=disk-rescued-root,serial="+RescueRootID)
	}
	if s.Ephemeral != "" {
		eph := Disk{Path: s.Ephemeral, Format: "qcow2"}
		args = append(args,
			"-blockdev", mustJSON(eph.blockdev("ephemeral")),
			"-device", "virtio-blk-pci,drive=ephemeral,id=disk-ephemeral,serial=ephemeral0")
	}
	if s.ConfigDrive != "" {
		cd := Disk{Path: s.ConfigDrive, Format: "raw", ReadOnly: true}
		args = append(args,
			"-blockdev", mustJSON(cd.blockdev("config")),
			"-device", "virtio-blk-pci,drive=config,id=config-drive,serial=config-2")
	}
	for i, n := range s.NICs {
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=net%d,ifname=%s,script=no,downscript=no", i, n.Tap),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=net%d,id=nic-%s,mac=%s,romfile=", i, n.ID, n.MAC))
	}
	for _, d := range s.ExtraDisks {
		node := volumeNodeName(d.ID)
		args = append(args,
			"-blockdev", mustJSON(d.blockdev(node)),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=%s,id=%s,serial=%s", node, VolumeDeviceID(d.ID), diskSerial(d.ID)))
	}
	return args, nil
}

// diskSerial is the virtio-blk serial of a volume: its id cut to the 20
// bytes virtio allows (as Nova does), so it shows in /dev/disk/by-id.
func diskSerial(id string) string {
	if len(id) > 20 {
		return id[:20]
	}
	return id
}

// lookPath resolves the QEMU binary name or path.
func lookPath(bin string) (string, error) {
	if strings.ContainsRune(bin, '/') {
		if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%w: %s is not an executable file", ErrNoQEMU, bin)
		}
		return bin, nil
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%w: %s not found in PATH (apt-get install qemu-system-x86 qemu-utils)", ErrNoQEMU, bin)
	}
	return p, nil
}
