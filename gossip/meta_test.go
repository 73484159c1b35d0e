package gossip

import (
	"errors"
	"strings"
	"testing"
)

func fullMeta() Meta {
	return Meta{
		Version:    MetaVersion,
		NodeID:     "6f1c1f4e-3b8f-4d38-9a51-0b3f3f6f1a2e",
		Name:       "host-a",
		APIAddr:    "10.0.0.1:8470",
		RaftAddr:   "10.0.0.1:8471",
		VTEPAddr:   "10.0.0.1",
		VCPUs:      64,
		RAMMB:      256 * 1024,
		DiskGB:     4000,
		UsedVCPUs:  12,
		UsedRAMMB:  48 * 1024,
		UsedDiskGB: 300,
		Accel:      "kvm",
		Arch:       "x86_64",
		SWVersion:  "v0.1.0-dev+abc123",
		Leaving:    true,
	}
}

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Meta
		want Meta
	}{
		{"full", fullMeta(), fullMeta()},
		{"zero", Meta{}, Meta{Version: MetaVersion}},
		{"unicode", Meta{Name: "hôte-ü"}, Meta{Version: MetaVersion, Name: "hôte-ü"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.in.Encode()
			if err != nil {
				t.Fatalf("Encode(%+v) error: %v", tt.in, err)
			}
			if len(b) > MaxMetaSize {
				t.Fatalf("Encode(%+v) = %d bytes; want <= %d", tt.in, len(b), MaxMetaSize)
			}
			got, err := DecodeMeta(b)
			if err != nil {
				t.Fatalf("DecodeMeta(%x) error: %v", b, err)
			}
			if got != tt.want {
				t.Errorf("DecodeMeta(Encode(%+v)) = %+v; want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestMetaEncodeErrors(t *testing.T) {
	big := fullMeta()
	big.Name = strings.Repeat("x", MaxMetaSize)
	justOver := Meta{Name: strings.Repeat("x", MaxMetaSize)}
	tests := []struct {
		name string
		in   Meta
		want error
	}{
		{"too large", big, ErrMetaTooLarge},
		{"just over", justOver, ErrMetaTooLarge},
		{"unknown version", Meta{Version: 2}, ErrBadMeta},
		{"negative", Meta{VCPUs: -1}, ErrBadMeta},
		{"huge counter", Meta{RAMMB: 1 << 40}, ErrBadMeta},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.in.Encode()
			if !errors.Is(err, tt.want) {
				t.Fatalf("Encode() = %d bytes, %v; want error %v", len(b), err, tt.want)
			}
		})
	}
}

func TestMetaEncodeLimitExact(t *testing.T) {
	// Version byte, nine one-byte empty lengths... find the largest Name
	// that fits and check the boundary on both sides.
	m := Meta{}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// A 2-byte uvarint length prefix is needed for names >= 128 bytes.
	room := MaxMetaSize - len(b) - 1
	m.Name = strings.Repeat("n", room)
	if b, err := m.Encode(); err != nil || len(b) != MaxMetaSize {
		t.Fatalf("Encode(name of %d) = %d bytes, %v; want %d bytes", room, len(b), err, MaxMetaSize)
	}
	m.Name += "n"
	if _, err := m.Encode(); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("Encode(name of %d) error = %v; want ErrMetaTooLarge", room+1, err)
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	valid, err := fullMeta().Encode()
	if err != nil {
		t.Fatal(err)
	}
	badUTF8, _ := Meta{Name: "ab"}.Encode()
	badUTF8[3] = 0xff // Version, NodeID len 0, Name len 2, 'a' -> 0xff
	flags := append([]byte(nil), valid...)
	flags[len(flags)-1] = 0x80
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"version 0", []byte{0}},
		{"version 2", append([]byte{2}, valid[1:]...)},
		{"only version", []byte{1}},
		{"truncated", valid[:len(valid)-1]},
		{"truncated string", valid[:5]},
		{"string past end", []byte{1, 100, 'a'}},
		{"overlong varint", append([]byte{1}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"bad utf-8", badUTF8},
		{"unknown flags", flags},
		{"too large", append(append([]byte(nil), valid...), make([]byte, MaxMetaSize)...)},
		{"json", []byte(`{"Version":1}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := DecodeMeta(tt.in); err == nil {
				t.Fatalf("DecodeMeta(%x) = %+v, nil; want error", tt.in, m)
			}
		})
	}
}

func TestDecodeMetaIgnoresAppendedFields(t *testing.T) {
	b, err := fullMeta().Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(append(b, 0x05, 'e', 'x', 't', 'r', 'a'))
	if err != nil || got != fullMeta() {
		t.Fatalf("DecodeMeta(with trailing field) = %+v, %v; want %+v", got, err, fullMeta())
	}
}

func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []Meta{fullMeta(), {}, {Name: "x", Leaving: true}} {
		b, err := m.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		// Anything accepted must survive a round trip.
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("Encode(DecodeMeta(%x)) error: %v", b, err)
		}
		again, err := DecodeMeta(enc)
		if err != nil || again != m {
			t.Fatalf("round trip of %x = %+v, %v; want %+v", b, again, err, m)
		}
	})
}
