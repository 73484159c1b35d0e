package storage

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
)

// ErrBadNFSURL is wrapped by ParseNFSURL's errors.
var ErrBadNFSURL = errors.New("invalid nfs:// URL")

// NFSURL is a parsed nfs://server/export[/path] location. QEMU's nfs://
// support (libnfs) speaks NFSv3 and finds the server's ports through its
// portmapper (port 111), so a URL carries no port.
//
// Export is the URL's first path segment and Path the rest; the split is
// nominal: clients mount the longest existing prefix of Export+Path, so
// an export may span several segments.
type NFSURL struct {
	Server string // host name or IP address (IPv6 without brackets)
	Export string // "/export"
	Path   string // "" or "/sub/dir"
}

// ParseNFSURL parses "nfs://server/export[/path]". It rejects other schemes,
// missing servers or exports, ports, user info, queries, fragments, "." and
// ".." segments and characters outside [A-Za-z0-9._~+=,@:/-], with an error
// that wraps ErrBadNFSURL and says what is wrong.
func ParseNFSURL(s string) (NFSURL, error) {
	bad := func(why string, args ...any) (NFSURL, error) {
		return NFSURL{}, fmt.Errorf("%w %q: %s", ErrBadNFSURL, s, fmt.Sprintf(why, args...))
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("%v", errors.Unwrap(err))
	}
	switch {
	case u.Scheme != "nfs":
		return bad("the scheme must be nfs://")
	case u.Opaque != "":
		return bad("want nfs://server/export[/path]")
	case u.User != nil:
		return bad("user info is not supported")
	case u.Port() != "":
		return bad("a port is not supported: libnfs finds the NFS ports through the server's portmapper (rpcbind on port 111)")
	case u.Hostname() == "":
		return bad("the server is missing")
	case u.RawQuery != "" || u.ForceQuery:
		return bad("query parameters are not supported")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return bad("a fragment is not supported")
	case strings.Contains(s, "%"):
		return bad("escaped characters are not supported")
	}
	p := strings.TrimRight(u.Path, "/")
	if p == "" {
		return bad("the export path is missing (nfs://server/export)")
	}
	if strings.Contains(p, "//") {
		return bad("empty path segments are not allowed")
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "." || seg == ".." {
			return bad("%q segments are not allowed", seg)
		}
	}
	for _, r := range p {
		if !nfsPathRune(r) {
			return bad("character %q is not allowed in the path", r)
		}
	}
	for _, r := range u.Hostname() {
		if !nfsHostRune(r) {
			return bad("character %q is not allowed in the server name", r)
		}
	}
	export, rest := p, ""
	if i := strings.Index(p[1:], "/"); i >= 0 {
		export, rest = p[:i+1], p[i+1:]
	}
	return NFSURL{Server: u.Hostname(), Export: export, Path: rest}, nil
}

func nfsPathRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._~+=,@:/-", r)
}

func nfsHostRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-:", r)
}

// Dir is the full directory path on the server: Export + Path.
func (u NFSURL) Dir() string { return u.Export + u.Path }

// host is the server as it appears in a URL (IPv6 in brackets).
func (u NFSURL) host() string {
	if strings.Contains(u.Server, ":") {
		return "[" + u.Server + "]"
	}
	return u.Server
}

// String is the URL: nfs://server/export/path.
func (u NFSURL) String() string { return "nfs://" + u.host() + u.Dir() }

// File is the URL of a file directly under the URL's directory.
func (u NFSURL) File(name string) string { return "nfs://" + u.host() + path.Join(u.Dir(), name) }
