package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// MetaVersion is the current Meta encoding version.
const MetaVersion uint8 = 1

// MaxMetaSize is the largest encoded Meta memberlist carries.
const MaxMetaSize = memberlist.MetaMaxSize

var (
	// ErrMetaTooLarge means a Meta encodes to more than MaxMetaSize bytes.
	ErrMetaTooLarge = errors.New("meta too large")
	// ErrBadMeta means bytes are not a Meta this package can decode, or a
	// Meta holds a value that cannot be encoded.
	ErrBadMeta = errors.New("bad meta")
)

// Meta is a host's gossip metadata, versioned, encoded to <= 512 bytes.
type Meta struct {
	Version    uint8  // encoding version, currently 1; 0 is read as 1
	NodeID     string // host id (uuid string)
	Name       string
	APIAddr    string // host:port
	RaftAddr   string // host:port
	VTEPAddr   string // IP
	VCPUs      int
	RAMMB      int
	DiskGB     int
	UsedVCPUs  int
	UsedRAMMB  int
	UsedDiskGB int
	Accel      string // "kvm" or "tcg"
	Arch       string // e.g. "x86_64"
	SWVersion  string
	Leaving    bool // set just before a graceful leave
}

const flagLeaving = 1 << 0

// normalize returns m with its version filled in.
func (m Meta) normalize() Meta {
	if m.Version == 0 {
		m.Version = MetaVersion
	}
	return m
}

// Encode returns the wire form of m. Version 1 layout: the version byte,
// then NodeID, Name, APIAddr, RaftAddr, VTEPAddr as uvarint-length-prefixed
// UTF-8, the six capacity counters as uvarints, Accel, Arch, SWVersion as
// strings, and one flags byte (bit 0: Leaving). Decoders ignore bytes after
// the flags, so fields can be appended without a version bump; a new version
// means an incompatible layout.
func (m Meta) Encode() ([]byte, error) {
	m = m.normalize()
	if m.Version != MetaVersion {
		return nil, fmt.Errorf("encode meta: version %d unsupported: %w", m.Version, ErrBadMeta)
	}
	b := make([]byte, 0, 128)
	b = append(b, m.Version)
	for _, s := range []string{m.NodeID, m.Name, m.APIAddr, m.RaftAddr, m.VTEPAddr} {
		b = appendString(b, s)
	}
	for _, n := range m.counters() {
		if *n < 0 || *n > math.MaxInt32 {
			return nil, fmt.Errorf("encode meta: capacity %d out of range: %w", *n, ErrBadMeta)
		}
		b = binary.AppendUvarint(b, uint64(*n))
	}
	for _, s := range []string{m.Accel, m.Arch, m.SWVersion} {
		b = appendString(b, s)
	}
	var flags byte
	if m.Leaving {
		flags |= flagLeaving
	}
	b = append(b, flags)
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("encode meta: %d bytes, limit %d: %w", len(b), MaxMetaSize, ErrMetaTooLarge)
	}
	return b, nil
}

// DecodeMeta parses the output of Encode. Unknown versions, truncated or
// malformed input and invalid UTF-8 are errors wrapping ErrBadMeta.
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) > MaxMetaSize {
		return Meta{}, fmt.Errorf("decode meta: %d bytes, limit %d: %w", len(b), MaxMetaSize, ErrMetaTooLarge)
	}
	if len(b) == 0 {
		return Meta{}, fmt.Errorf("decode meta: empty: %w", ErrBadMeta)
	}
	if b[0] != MetaVersion {
		return Meta{}, fmt.Errorf("decode meta: version %d unsupported: %w", b[0], ErrBadMeta)
	}
	d := decoder{buf: b[1:]}
	m := Meta{Version: b[0]}
	for _, s := range []*string{&m.NodeID, &m.Name, &m.APIAddr, &m.RaftAddr, &m.VTEPAddr} {
		*s = d.string()
	}
	for _, n := range m.counters() {
		*n = d.int()
	}
	for _, s := range []*string{&m.Accel, &m.Arch, &m.SWVersion} {
		*s = d.string()
	}
	flags := d.byte()
	if d.err != nil {
		return Meta{}, fmt.Errorf("decode meta: %w", d.err)
	}
	if flags&^flagLeaving != 0 {
		return Meta{}, fmt.Errorf("decode meta: unknown flags %#x: %w", flags, ErrBadMeta)
	}
	m.Leaving = flags&flagLeaving != 0
	return m, nil
}

func (m *Meta) counters() []*int {
	return []*int{&m.VCPUs, &m.RAMMB, &m.DiskGB, &m.UsedVCPUs, &m.UsedRAMMB, &m.UsedDiskGB}
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads fields in order and keeps the first error.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%s: %w", what, ErrBadMeta)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("truncated or overlong varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) int() int {
	v := d.uvarint()
	if v > math.MaxInt32 {
		d.fail("counter out of range")
		return 0
	}
	return int(v)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.buf)) {
		d.fail("string longer than input")
		return ""
	}
	s := d.buf[:n]
	d.buf = d.buf[n:]
	if !utf8.Valid(s) {
		d.fail("string not utf-8")
		return ""
	}
	return string(s)
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) == 0 {
		d.fail("missing flags")
		return 0
	}
	c := d.buf[0]
	d.buf = d.buf[1:]
	return c
}
