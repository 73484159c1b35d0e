package identity

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// authRequest is a decoded and validated POST /v3/auth/tokens body.
type authRequest struct {
	method   string
	user     *userRef // password
	password string
	tokenID  string      // token
	appCred  *appCredRef // application_credential
	secret   string
	scope    scopeReq
}

type domainRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type userRef struct {
	ID       string     `json:"id"`
	Name     string     `json:"name"`
	Domain   *domainRef `json:"domain"`
	Password *string    `json:"password"`
}

type appCredRef struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Secret *string  `json:"secret"`
	User   *userRef `json:"user"`
}

type scopeKind int

const (
	scopeDefault     scopeKind = iota // none asked: the user's default project if usable, else unscoped
	scopeUnscoped                     // "scope": "unscoped"
	scopeProject                      // a project by id, or by name and domain
	scopeUnsupported                  // domain, system or trust scope
)

type scopeReq struct {
	kind        scopeKind
	projectID   string
	projectName string
	domain      *domainRef
}

// errUnsupportedMethod is Keystone's AuthMethodNotSupported (401).
func errUnsupportedMethod() error {
	return rest.Unauthorized("Attempted to authenticate with an unsupported method.")
}

// decodeAuthRequest validates an auth body the way Keystone does: missing
// or mistyped fields are 400 ("Expecting to find …"), methods without their
// data are 400, methods we do not support are 401.
func decodeAuthRequest(data []byte) (*authRequest, error) {
	var env struct {
		Auth *struct {
			Identity map[string]json.RawMessage `json:"identity"`
			Scope    json.RawMessage            `json:"scope"`
		} `json:"auth"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, invalidInput("auth", err)
	}
	if env.Auth == nil {
		return nil, expecting("auth", "request body")
	}
	id := env.Auth.Identity
	if id == nil {
		return nil, expecting("identity", "auth")
	}
	var methods []string
	if raw, ok := id["methods"]; !ok || isNull(raw) {
		return nil, expecting("methods", "identity")
	} else if err := json.Unmarshal(raw, &methods); err != nil {
		return nil, invalidInput("methods", err)
	}
	methods = dedupe(methods)
	if len(methods) == 0 {
		return nil, expecting("methods", "identity")
	}
	for _, m := range methods {
		if raw, ok := id[m]; !ok || isNull(raw) {
			return nil, expecting(m, "identity")
		}
	}
	for _, m := range methods {
		if m != methodPassword && m != methodToken && m != methodAppCred {
			return nil, errUnsupportedMethod()
		}
	}
	if len(methods) > 1 {
		// Keystone can combine methods (multi-factor); we support one.
		return nil, errUnsupportedMethod()
	}
	req := &authRequest{method: methods[0]}
	raw := id[req.method]
	switch req.method {
	case methodPassword:
		var p struct {
			User *userRef `json:"user"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, invalidInput("password", err)
		}
		if p.User == nil {
			return nil, expecting("user", "password")
		}
		if err := checkUserRef(p.User); err != nil {
			return nil, err
		}
		if p.User.Password == nil {
			return nil, expecting("password", "user")
		}
		req.user, req.password = p.User, *p.User.Password
	case methodToken:
		var t struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, invalidInput("token", err)
		}
		if t.ID == "" {
			return nil, expecting("id", "token")
		}
		req.tokenID = t.ID
	case methodAppCred:
		var a appCredRef
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, invalidInput("application_credential", err)
		}
		if a.Secret == nil {
			return nil, expecting("secret", "application_credential")
		}
		if a.ID == "" {
			if a.Name == "" {
				return nil, expecting("id or name", "application_credential")
			}
			if a.User == nil {
				return nil, expecting("user", "application_credential")
			}
			if err := checkUserRef(a.User); err != nil {
				return nil, err
			}
		}
		req.appCred, req.secret = &a, *a.Secret
	}
	sc, err := decodeScope(env.Auth.Scope)
	if err != nil {
		return nil, err
	}
	req.scope = sc
	return req, nil
}

// checkUserRef requires an id, or a name with a domain id or name.
func checkUserRef(u *userRef) error {
	if u.ID != "" {
		return nil
	}
	if u.Name == "" {
		return expecting("id or name", "user")
	}
	return checkDomainRef(u.Domain, "user")
}

func checkDomainRef(d *domainRef, target string) error {
	if d == nil {
		return expecting("domain", target)
	}
	if d.ID == "" && d.Name == "" {
		return expecting("id or name", "domain")
	}
	return nil
}

func decodeScope(raw json.RawMessage) (scopeReq, error) {
	raw = bytes.TrimSpace(raw)
	if isNull(raw) {
		return scopeReq{kind: scopeDefault}, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil || s != "unscoped" {
			return scopeReq{}, rest.BadRequest(`Invalid input for field 'scope': expected an object or "unscoped".`)
		}
		return scopeReq{kind: scopeUnscoped}, nil
	}
	var sc struct {
		Project *struct {
			ID     string     `json:"id"`
			Name   string     `json:"name"`
			Domain *domainRef `json:"domain"`
		} `json:"project"`
		Domain *domainRef      `json:"domain"`
		System json.RawMessage `json:"system"`
		Trust  json.RawMessage `json:"OS-TRUST:trust"`
	}
	if err := json.Unmarshal(raw, &sc); err != nil {
		return scopeReq{}, invalidInput("scope", err)
	}
	n := 0
	for _, present := range []bool{sc.Project != nil, sc.Domain != nil, !isNull(sc.System), !isNull(sc.Trust)} {
		if present {
			n++
		}
	}
	switch {
	case n > 1:
		return scopeReq{}, rest.BadRequest("Only one of project, domain, system or OS-TRUST:trust may be given in scope.%s", clientError)
	case n == 0:
		return scopeReq{kind: scopeDefault}, nil
	case sc.Project == nil:
		return scopeReq{kind: scopeUnsupported}, nil
	}
	p := sc.Project
	if p.ID != "" {
		return scopeReq{kind: scopeProject, projectID: p.ID}, nil
	}
	if p.Name == "" {
		return scopeReq{}, expecting("id or name", "project")
	}
	if err := checkDomainRef(p.Domain, "project"); err != nil {
		return scopeReq{}, err
	}
	return scopeReq{kind: scopeProject, projectName: p.Name, domain: p.Domain}, nil
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

func dedupe(xs []string) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		dup := false
		for _, y := range out {
			dup = dup || x == y
		}
		if !dup {
			out = append(out, x)
		}
	}
	return out
}

// isDefaultDomain reports whether a domain reference names the Default
// domain, the only one.
func isDefaultDomain(d *domainRef) bool {
	if d == nil {
		return false
	}
	if d.ID != "" {
		return d.ID == statedb.DefaultDomainID
	}
	return strings.EqualFold(d.Name, "Default")
}
