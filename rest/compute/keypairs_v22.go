package compute

import (
	"net/http"

	"github.com/peerstack/peerstack/rest"
)

// Keypair microversions: 2.2 adds the key type ("ssh" or "x509") to the
// create body and the views, and makes create 201 and delete 204; 2.10 lets an admin act on another user's
// keypairs (user_id in the create body, ?user_id= on list, show, delete).

// keypairUser is whose keypairs a request is about: the caller's, or from
// 2.10 the user an admin names (named; "" is the caller).
func (s *service) keypairUser(c *rest.Ctx, named, policy string) (string, error) {
	if named == "" || named == c.Cred.UserID || !atLeast(c, 2, 10) {
		return c.Cred.UserID, nil
	}
	if !s.isAdmin(c) {
		return "", rest.Forbiddenf("Policy doesn't allow os_compute_api:os-keypairs:%s to be performed.", policy)
	}
	return named, nil
}

// keypairType checks the requested key type: only from 2.2, "ssh" or
// "x509"; peerstack makes and takes OpenSSH keys only.
func keypairType(c *rest.Ctx, t *string) (string, error) {
	if t == nil {
		return "ssh", nil
	}
	if !atLeast(c, 2, 2) {
		return "", rest.BadRequest("Invalid input for field/attribute keypair. Additional properties are not allowed ('type' was unexpected)")
	}
	switch *t {
	case "ssh":
		return "ssh", nil
	case "x509":
		return "", rest.BadRequest("Keypair data is invalid: x509 keypairs are not supported, only ssh")
	}
	return "", rest.BadRequest("Invalid input for field/attribute type. Value: %s. %q is not one of ['ssh', 'x509']", *t, *t)
}

// keypairTypeOf is what a view shows as the type of a stored keypair.
func keypairTypeOf(t string) string {
	if t == "" {
		return "ssh"
	}
	return t
}

// keypairCreated is create's answer: 200 before 2.2, 201 from it.
func keypairCreated(c *rest.Ctx, view keypairView) *rest.Response {
	st := http.StatusOK
	if atLeast(c, 2, 2) {
		st = http.StatusCreated
	}
	return &rest.Response{Status: st, Body: map[string]any{"keypair": view}}
}

// keypairDeleted is delete's answer: 202 before 2.2, 204 from it.
func keypairDeleted(c *rest.Ctx) *rest.Response {
	if atLeast(c, 2, 2) {
		return noContent()
	}
	return accepted()
}
