package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// BlobFormat is what the bytes of an image really are, read from their
// headers (never by running anything on them).
type BlobFormat struct {
	// Format is qcow2, iso, vmdk, vhdx, vdi, vpc, qed, luks or raw (none
	// of the others).
	Format      string
	VirtualSize int64
	// BackingFile is a qcow2's backing file name, "" if none.
	BackingFile string
	// DataFile is true when a qcow2 keeps its data in an external file.
	DataFile bool
	// DataFileName is that file's name when the header carries it.
	DataFileName string
}

// ErrBlobUnsafe marks an image whose header points outside itself (a
// backing or external data file): opening it would read another file of
// the host.
var ErrBlobUnsafe = errors.New("image refers to an outside file")

// BlobInspectFile inspects the file at path.
func BlobInspectFile(path string) (BlobFormat, error) {
	f, err := os.Open(path)
	if err != nil {
		return BlobFormat{}, fmt.Errorf("inspect image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return BlobFormat{}, fmt.Errorf("inspect image: %w", err)
	}
	return BlobInspect(f, fi.Size())
}

// qcow2 header layout (docs/interop/qcow2.txt in QEMU).
const (
	blobQcowMagic            = "QFI\xfb"
	blobQcowV2HeaderLen      = 72
	blobQcowIncompatDataFile = 1 << 2
	blobQcowExtEnd           = 0x00000000
	blobQcowExtDataFile      = 0x44415441
	blobQcowMaxClusterBits   = 21
	blobQcowMinClusterBits   = 9
)

// BlobInspect identifies the format of size bytes readable at r. It
// returns an error only when it cannot read, or for a qcow2 whose header
// is inconsistent; "raw" is the answer for anything unrecognised.
func BlobInspect(r io.ReaderAt, size int64) (BlobFormat, error) {
	head := make([]byte, 512)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return BlobFormat{}, fmt.Errorf("inspect image: %w", err)
	}
	head = head[:n]
	raw := BlobFormat{Format: "raw", VirtualSize: size}
	switch {
	case bytes.HasPrefix(head, []byte(blobQcowMagic)):
		return blobInspectQcow2(r, size, head)
	case bytes.HasPrefix(head, []byte("KDMV")), bytes.HasPrefix(head, []byte("# Disk DescriptorFile")):
		return BlobFormat{Format: "vmdk", VirtualSize: size}, nil
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		return BlobFormat{Format: "vhdx", VirtualSize: size}, nil
	case bytes.HasPrefix(head, []byte("conectix")):
		return BlobFormat{Format: "vpc", VirtualSize: size}, nil
	case bytes.HasPrefix(head, []byte("QED\x00")):
		return BlobFormat{Format: "qed", VirtualSize: size}, nil
	case bytes.HasPrefix(head, []byte("LUKS\xba\xbe")):
		return BlobFormat{Format: "luks", VirtualSize: size}, nil
	case len(head) >= 0x44 && binary.LittleEndian.Uint32(head[0x40:]) == 0xbeda107f:
		return BlobFormat{Format: "vdi", VirtualSize: size}, nil
	}
	// A VHD (fixed) has its "conectix" footer in the last 512 bytes.
	if size >= 512 {
		foot := make([]byte, 8)
		if _, err := r.ReadAt(foot, size-512); err == nil && string(foot) == "conectix" {
			return BlobFormat{Format: "vpc", VirtualSize: size}, nil
		}
	}
	// ISO 9660: "CD001" in the first volume descriptor at sector 16.
	if size >= 0x8006 {
		id := make([]byte, 5)
		if _, err := r.ReadAt(id, 0x8001); err == nil && string(id) == "CD001" {
			return BlobFormat{Format: "iso", VirtualSize: size}, nil
		}
	}
	return raw, nil
}

func blobInspectQcow2(r io.ReaderAt, size int64, head []byte) (BlobFormat, error) {
	bad := func(format string, args ...any) (BlobFormat, error) {
		return BlobFormat{Format: "qcow2"}, fmt.Errorf("qcow2 header: "+format, args...)
	}
	if len(head) < blobQcowV2HeaderLen {
		return bad("truncated (%d bytes)", len(head))
	}
	be := binary.BigEndian
	version := be.Uint32(head[4:])
	backingOff := be.Uint64(head[8:])
	backingLen := be.Uint32(head[16:])
	clusterBits := be.Uint32(head[20:])
	vsize := be.Uint64(head[24:])
	f := BlobFormat{Format: "qcow2", VirtualSize: int64(vsize)}
	switch {
	case version != 2 && version != 3:
		return bad("unsupported version %d", version)
	case clusterBits < blobQcowMinClusterBits || clusterBits > blobQcowMaxClusterBits:
		return bad("cluster bits %d out of range", clusterBits)
	case vsize > 1<<62:
		return bad("virtual size %d out of range", vsize)
	}
	cluster := int64(1) << clusterBits
	if backingOff != 0 {
		name := "?"
		if backingLen > 0 && backingLen <= 1023 && int64(backingOff)+int64(backingLen) <= size {
			b := make([]byte, backingLen)
			if _, err := r.ReadAt(b, int64(backingOff)); err == nil {
				name = string(b)
			}
		}
		f.BackingFile = name
	}
	extStart := int64(blobQcowV2HeaderLen)
	if version == 3 {
		if len(head) < 104 {
			return bad("truncated v3 header")
		}
		incompat := be.Uint64(head[72:])
		hdrLen := be.Uint32(head[100:])
		if hdrLen < 104 || int64(hdrLen) > cluster {
			return bad("header length %d out of range", hdrLen)
		}
		f.DataFile = incompat&blobQcowIncompatDataFile != 0
		extStart = int64(hdrLen)
	}
	// Header extensions follow the header, inside the first cluster.
	end := min(cluster, size)
	if backingOff != 0 && int64(backingOff) < end {
		end = int64(backingOff)
	}
	for off := extStart; off+8 <= end; {
		var hdr [8]byte
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return bad("read extension at %d: %v", off, err)
		}
		typ, ln := be.Uint32(hdr[:]), int64(be.Uint32(hdr[4:]))
		if typ == blobQcowExtEnd {
			break
		}
		if off+8+ln > end {
			return bad("extension %#x overruns the first cluster", typ)
		}
		if typ == blobQcowExtDataFile {
			f.DataFile = true
			if ln > 0 && ln <= 1023 {
				b := make([]byte, ln)
				if _, err := r.ReadAt(b, off+8); err == nil {
					f.DataFileName = string(b)
				}
			}
		}
		off += 8 + (ln+7)/8*8
	}
	return f, nil
}

// Unsafe returns ErrBlobUnsafe (wrapped, naming the file) when the image
// refers to a backing or external data file.
func (f BlobFormat) Unsafe() error {
	switch {
	case f.BackingFile != "":
		return fmt.Errorf("%s has a backing file %q: %w", f.Format, f.BackingFile, ErrBlobUnsafe)
	case f.DataFile:
		return fmt.Errorf("%s has an external data file %q: %w", f.Format, f.DataFileName, ErrBlobUnsafe)
	}
	return nil
}
