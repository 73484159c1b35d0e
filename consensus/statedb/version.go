package statedb

import (
	"strconv"
	"strings"
)

// Software versions are semantic versions: MAJOR.MINOR.PATCH with an
// optional leading "v" and an optional "-prerelease" (which sorts before
// the release); "+build" metadata is ignored.

// parsedVersion is a version split into its numbers and pre-release.
type parsedVersion struct {
	num [3]uint64
	pre string
}

func parseVersion(v string) (parsedVersion, bool) {
	var p parsedVersion
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexByte(v, '+'); i >= 0 {
		v = v[:i]
	}
	if i := strings.IndexByte(v, '-'); i >= 0 {
		v, p.pre = v[:i], v[i+1:]
		if p.pre == "" {
			return p, false
		}
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return p, false
	}
	for i, s := range parts {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || s == "" || (len(s) > 1 && s[0] == '0') {
			return p, false
		}
		p.num[i] = n
	}
	return p, true
}

func validVersion(v string) bool {
	_, ok := parseVersion(v)
	return ok
}

// CompareVersions compares two semantic versions: -1 if a < b, 0 if equal,
// +1 if a > b. A version that does not parse sorts before every valid one
// (a member reporting garbage counts as the oldest).
func CompareVersions(a, b string) int {
	pa, oka := parseVersion(a)
	pb, okb := parseVersion(b)
	switch {
	case !oka && !okb:
		return 0
	case !oka:
		return -1
	case !okb:
		return 1
	}
	for i := range pa.num {
		if pa.num[i] != pb.num[i] {
			if pa.num[i] < pb.num[i] {
				return -1
			}
			return 1
		}
	}
	return comparePre(pa.pre, pb.pre)
}

// comparePre orders pre-releases: none sorts last; dot-separated
// identifiers compare numerically when both are numbers, else as text.
func comparePre(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] == bs[i] {
			continue
		}
		na, erra := strconv.ParseUint(as[i], 10, 64)
		nb, errb := strconv.ParseUint(bs[i], 10, 64)
		switch {
		case erra == nil && errb == nil:
			if na < nb {
				return -1
			}
			return 1
		case erra == nil:
			return -1 // numeric identifiers sort before alphanumeric ones
		case errb == nil:
			return 1
		case as[i] < bs[i]:
			return -1
		default:
			return 1
		}
	}
	switch {
	case len(as) < len(bs):
		return -1
	case len(as) > len(bs):
		return 1
	}
	return 0
}
