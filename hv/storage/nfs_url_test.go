package storage

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

func TestParseNFSURL(t *testing.T) {
	tests := []struct {
		in      string
		want    NFSURL
		wantErr string // substring of the error; "" = success
	}{
		{in: "nfs://srv/export", want: NFSURL{Server: "srv", Export: "/export"}},
		{in: "nfs://srv/export/", want: NFSURL{Server: "srv", Export: "/export"}},
		{in: "nfs://10.0.0.5/export/peerstack/vols", want: NFSURL{Server: "10.0.0.5", Export: "/export", Path: "/peerstack/vols"}},
		{in: "nfs://[fd00::1]/srv/nfs", want: NFSURL{Server: "fd00::1", Export: "/srv", Path: "/nfs"}},
		{in: "nfs://nas.example.org/vol_1-a.b", want: NFSURL{Server: "nas.example.org", Export: "/vol_1-a.b"}},
		{in: "", wantErr: "scheme must be nfs"},
		{in: "/srv/export", wantErr: "scheme must be nfs"},
		{in: "http://srv/export", wantErr: "scheme must be nfs"},
		{in: "nfs:srv/export", wantErr: "want nfs://server/export"},
		{in: "nfs://srv", wantErr: "export path is missing"},
		{in: "nfs://srv/", wantErr: "export path is missing"},
		{in: "nfs:///export", wantErr: "server is missing"},
		{in: "nfs://srv:2049/export", wantErr: "port is not supported"},
		{in: "nfs://user@srv/export", wantErr: "user info"},
		{in: "nfs://srv/export?uid=0", wantErr: "query"},
		{in: "nfs://srv/export?", wantErr: "query"},
		{in: "nfs://srv/export#x", wantErr: "fragment"},
		{in: "nfs://srv/export/../etc", wantErr: `".." segments`},
		{in: "nfs://srv/export/./x", wantErr: `"." segments`},
		{in: "nfs://srv/export//x", wantErr: "empty path segments"},
		{in: "nfs://srv/exp%20ort", wantErr: "escaped"},
		{in: "nfs://srv/exp ort", wantErr: "not allowed"},
		{in: "nfs://srv/export/a;b", wantErr: "not allowed"},
		{in: "nfs://s_rv/export", wantErr: "server name"},
		{in: "nfs://srv/export\n", wantErr: "invalid"},
	}
	for _, tt := range tests {
		got, err := ParseNFSURL(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseNFSURL(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrBadNFSURL) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseNFSURL(%q) = %+v, %v; want an ErrBadNFSURL error about %q", tt.in, got, err, tt.wantErr)
		}
	}
}

func TestNFSURLString(t *testing.T) {
	tests := []struct{ in, str, file string }{
		{"nfs://srv/export/", "nfs://srv/export", "nfs://srv/export/vol-1.qcow2"},
		{"nfs://[fd00::1]/a/b", "nfs://[fd00::1]/a/b", "nfs://[fd00::1]/a/b/vol-1.qcow2"},
	}
	for _, tt := range tests {
		u, err := ParseNFSURL(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if u.String() != tt.str || u.File("vol-1.qcow2") != tt.file {
			t.Errorf("ParseNFSURL(%q) String, File = %q, %q; want %q, %q", tt.in, u.String(), u.File("vol-1.qcow2"), tt.str, tt.file)
		}
		if back, err := ParseNFSURL(u.String()); err != nil || back != u {
			t.Errorf("round trip of %q = %+v, %v; want %+v", tt.in, back, err, u)
		}
	}
}

func FuzzParseNFSURL(f *testing.F) {
	for _, s := range []string{"nfs://srv/export", "nfs://[::1]/a/b", "nfs://a:1/b", "nfs://a/b/../c", "nfs://a/%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseNFSURL(s)
		if err != nil {
			if !errors.Is(err, ErrBadNFSURL) {
				t.Fatalf("ParseNFSURL(%q) error %v does not wrap ErrBadNFSURL", s, err)
			}
			return
		}
		// A parsed URL prints back to one that parses the same.
		back, err := ParseNFSURL(u.String())
		if err != nil || back != u {
			t.Fatalf("ParseNFSURL(%q) = %+v; its String %q parses to %+v, %v", s, u, u.String(), back, err)
		}
	})
}

func TestBlockdevArgs(t *testing.T) {
	nfs := BlockdevArgs("nfs://127.0.0.1/export/sub/vol-1.qcow2", "qcow2", "vol1")
	file := nfs["file"].(map[string]any)
	if nfs["driver"] != "qcow2" || nfs["node-name"] != "vol1" || file["driver"] != "nfs" ||
		file["path"] != "/export/sub/vol-1.qcow2" || file["server"].(map[string]any)["host"] != "127.0.0.1" ||
		file["server"].(map[string]any)["type"] != "inet" {
		t.Errorf("BlockdevArgs(nfs) = %v", nfs)
	}
	local := BlockdevArgs("/var/lib/peerstack/volumes/vol-1.raw", "raw", "vol1")
	file = local["file"].(map[string]any)
	if local["driver"] != "raw" || file["driver"] != "file" || file["filename"] != "/var/lib/peerstack/volumes/vol-1.raw" {
		t.Errorf("BlockdevArgs(local) = %v", local)
	}
}

func TestNFSStatus(t *testing.T) {
	if !errors.Is(NFS3ErrNoEnt, fs.ErrNotExist) || errors.Is(NFS3ErrAcces, fs.ErrNotExist) {
		t.Error("NFS3ERR_NOENT must match fs.ErrNotExist, and only it")
	}
	if NFSStatus(70).Error() != "NFS3ERR_STALE" || NFSStatus(4242).Error() != "NFS3ERR_4242" {
		t.Errorf("names = %q, %q", NFSStatus(70).Error(), NFSStatus(4242).Error())
	}
}

// FuzzRPCReply feeds arbitrary bytes to the reply parser: errors, never
// panics.
func FuzzRPCReply(f *testing.F) {
	var ok xdrEnc
	ok.u32(7)
	ok.u32(1)
	ok.u32(0)
	ok.u32(0)
	ok.u32(0)
	ok.u32(0)
	ok.u32(2049)
	f.Add(ok.b)
	f.Add([]byte{0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		rc := &rpcConn{}
		d := &xdrDec{b: b}
		d.u32()
		if d, err := rc.reply(d, 100000, 2, 3); err == nil {
			d.u32()
			d.opaque(64)
			postOpAttr(d)
		}
	})
}
