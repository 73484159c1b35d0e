package identity

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Login throttling. Every password or secret check is reserved before
// bcrypt runs, so parallel guesses cannot outrun the counters:
//   - per source address (in memory, this host): sourceBackoff;
//   - per user: the cluster-wide lockout, counted in the FSM by
//     CmdLoginAttempt, plus userBackoff in memory;
//   - the cloud administrators (admin role on the admin project) are
//     locked out per source only, so strangers cannot lock them out;
//   - application credentials: userBackoff per credential.
var (
	sourceBackoff = rest.Backoff{Free: 20, Base: time.Second, Max: 5 * time.Minute}
	userBackoff   = rest.Backoff{Free: 10, Base: time.Second, Max: time.Minute}
)

const (
	// throttleForget drops the in-memory failures of a quiet key.
	throttleForget = 15 * time.Minute
	// attemptTimeout bounds the Raft write that reserves a login attempt
	// and the one that resets the counter; past it the login goes on
	// with the local state (a host cut off from the majority).
	attemptTimeout = 2 * time.Second
	// adminProjectName is the project whose admin role is cloud-wide.
	adminProjectName = "admin"
)

// errLocked names no user: the caller knows who they tried to be.
func errLocked() error { return rest.Unauthorized(statedb.ErrAccountLocked) }

// errBusy is the answer when the password pool is full.
func errBusy() error {
	return &rest.HTTPError{Status: http.StatusServiceUnavailable, Quiet: true,
		Msg: "Too many logins are being checked on this host; retry shortly.", Header: http.Header{"Retry-After": {"1"}}}
}

// reserve counts one attempt against key or returns the 429 to answer.
func (s *service) reserve(key string, p rest.Backoff) error {
	if ok, wait := s.thr.Reserve(key, p, time.Now()); !ok {
		return rest.TooManyRequests(wait)
	}
	return nil
}

// cloudAdmin reports whether u holds the admin role on the admin project.
func cloudAdmin(sn *statedb.Snapshot, u *statedb.User) bool {
	p, ok := sn.ProjectByName(adminProjectName)
	if !ok {
		return false
	}
	for _, r := range sn.UserRoles(u.ID, p.ID) {
		if r.Name == "admin" {
			return true
		}
	}
	return false
}

// check runs one password check in the backend's pool.
func (s *service) check(c *rest.Ctx, hash, pw string) (bool, error) {
	ok, err := s.b.CheckPassword(c.Context(), hash, pw)
	if err != nil {
		return false, errBusy()
	}
	return ok, nil
}

func (s *service) authPassword(c *rest.Ctx, sn *statedb.Snapshot, req *authRequest) (*authResult, error) {
	src := "src/" + rest.Source(c.R).String()
	if err := s.reserve(src, sourceBackoff); err != nil {
		return nil, err
	}
	u, ok := findUser(sn, req.user)
	if !ok {
		if _, err := s.check(c, s.dummy(), req.password); err != nil { // same cost as a real check
			return nil, err
		}
		return nil, errUnauthorized()
	}
	if err := s.checkPassword(c, sn, u, req.password, src); err != nil {
		return nil, err
	}
	s.thr.Succeeded(src)
	p, roles, err := resolveScope(sn, u, req.scope)
	if err != nil {
		return nil, err
	}
	return &authResult{user: u, project: p, roles: roles, methods: []string{methodPassword}}, nil
}

// checkPassword verifies a user's password with Keystone's lockout rules,
// reserving the attempt before bcrypt runs: a locked account is refused
// before the password is checked; a lock that has expired starts the count
// again; each attempt counts until a success resets the counter. A
// disabled user fails after the password check, as in Keystone.
//
// When no leader takes the reservation in time (this host is on the
// minority side of a partition), the login goes on against the local
// state and the in-memory throttles: a valid password still logs in.
func (s *service) checkPassword(c *rest.Ctx, sn *statedb.Snapshot, u *statedb.User, pw, src string) error {
	st := settings(sn)
	admin := cloudAdmin(sn, u)
	userKey, pol := "user/"+u.ID, userBackoff
	if admin {
		// Locked out per source: a stranger's guesses lock the stranger.
		userKey = "user/" + u.ID + "/" + src
		if st.LockoutAttempts > 0 {
			d := st.LockoutDuration
			if d <= 0 {
				d = 5 * time.Minute
			}
			pol = rest.Backoff{Free: st.LockoutAttempts, Base: d, Max: d}
		}
	}
	if err := s.reserve(userKey, pol); err != nil {
		if admin {
			return errLocked()
		}
		return err
	}
	reserved := false
	if st.LockoutAttempts > 0 && !admin {
		ctx, cancel := context.WithTimeout(c.Context(), attemptTimeout)
		_, err := rest.Propose(ctx, s.b, statedb.CmdLoginAttempt, statedb.LoginCmd{UserID: u.ID})
		cancel()
		var se *statedb.Error
		switch {
		case err == nil:
			reserved = true
		case errors.Is(err, statedb.ErrForbidden):
			return errLocked()
		case errors.As(err, &se) && !errors.Is(err, statedb.ErrConflict):
			return err
		// Refused as a conflict (a member still runs a version without
		// login reservations, during a rolling upgrade) or no leader: the
		// local lockout state decides, as before reservations existed.
		case u.FailedLogins >= st.LockoutAttempts &&
			(st.LockoutDuration <= 0 || s.b.Now().Sub(u.LastFailure) < st.LockoutDuration):
			return errLocked() // locked as far as this host knows
		}
	}
	hash := u.PasswordHash
	if hash == "" {
		hash = s.dummy()
	}
	ok, err := s.check(c, hash, pw)
	if err != nil {
		return err
	}
	if !ok || u.PasswordHash == "" || !u.Enabled {
		return errUnauthorized()
	}
	s.thr.Succeeded(userKey)
	if reserved {
		// Best effort: a failure here never fails the login.
		ctx, cancel := context.WithTimeout(c.Context(), attemptTimeout)
		_, _ = rest.Propose(ctx, s.b, statedb.CmdLoginSucceeded, statedb.LoginCmd{UserID: u.ID})
		cancel()
	}
	return nil
}

func (s *service) authAppCred(c *rest.Ctx, sn *statedb.Snapshot, req *authRequest) (*authResult, error) {
	src := "src/" + rest.Source(c.R).String()
	if err := s.reserve(src, sourceBackoff); err != nil {
		return nil, err
	}
	ref := req.appCred
	var ac *statedb.AppCredential
	if ref.ID != "" {
		ac, _ = sn.AppCredential(ref.ID)
	} else if u, ok := findUser(sn, ref.User); ok {
		for _, a := range sn.AppCredentials(u.ID) {
			if a.Name == ref.Name {
				ac = a
			}
		}
	}
	if ac == nil {
		if _, err := s.check(c, s.dummy(), req.secret); err != nil {
			return nil, err
		}
		return nil, errUnauthorized()
	}
	key := "appcred/" + ac.ID
	if err := s.reserve(key, userBackoff); err != nil {
		return nil, err
	}
	ok, err := s.check(c, ac.SecretHash, req.secret)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errUnauthorized()
	}
	s.thr.Succeeded(key)
	s.thr.Succeeded(src)
	return s.appCredResult(sn, req, ac)
}

// appCredResult checks what a verified application credential may still
// do: unexpired, its user and project enabled, its roles still held, and
// bound to its project.
func (s *service) appCredResult(sn *statedb.Snapshot, req *authRequest, ac *statedb.AppCredential) (*authResult, error) {
	if !ac.ExpiresAt.IsZero() && !s.b.Now().Before(ac.ExpiresAt) {
		return nil, errUnauthorized()
	}
	u, ok := sn.User(ac.UserID)
	if !ok || !u.Enabled {
		return nil, errUnauthorized()
	}
	p, ok := sn.Project(ac.ProjectID)
	if !ok || !p.Enabled {
		return nil, errUnauthorized()
	}
	held := map[string]*statedb.Role{}
	for _, r := range sn.UserRoles(u.ID, p.ID) {
		held[r.ID] = r
	}
	var roles []RoleRef
	for _, id := range ac.RoleIDs {
		r, ok := held[id]
		if !ok {
			return nil, errUnauthorized()
		}
		roles = append(roles, RoleRef{ID: r.ID, Name: r.Name})
	}
	if len(roles) == 0 {
		return nil, errUnauthorized()
	}
	switch req.scope.kind {
	case scopeUnsupported:
		return nil, errUnauthorized()
	case scopeProject:
		if sp, ok := findProject(sn, req.scope); !ok || sp.ID != p.ID {
			return nil, errUnauthorized()
		}
	}
	return &authResult{user: u, project: p, roles: roles, methods: []string{methodAppCred},
		appCred: ac, expires: ac.ExpiresAt}, nil
}

func (s *service) recordLogin(c *rest.Ctx, t statedb.CmdType, userID string) error {
	_, err := rest.Propose(c.Context(), s.b, t, statedb.LoginCmd{UserID: userID})
	return err
}

// minSecretLen is the shortest application credential secret accepted
// from a client; generated ones are 64 characters.
const minSecretLen = 16
