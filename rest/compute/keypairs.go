package compute

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// keypairView is a keypair at 2.1; private_key only on generation.
type keypairView struct {
	Name        string `json:"name"`
	PublicKey   string `json:"public_key"`
	Fingerprint string `json:"fingerprint"`
	UserID      string `json:"user_id,omitempty"`
	Type        string `json:"type,omitempty"` // 2.2
	PrivateKey  string `json:"private_key,omitempty"`
	CreatedAt   string `json:"created_at,omitempty"`
}

// keypairOwner checks the caller may act on keypairs: they belong to the
// user, and writing needs a role that writes in the token's project.
func (s *service) keypairOwner(c *rest.Ctx, access rest.Access) error {
	if c.Cred == nil {
		return rest.Unauthorized("The request you have made requires authentication.")
	}
	return rest.Check(s.b, c, access, c.Cred.ProjectID, false, "Keypair")
}

func (s *service) listKeypairs(c *rest.Ctx) (any, error) {
	if err := s.keypairOwner(c, rest.Read); err != nil {
		return nil, err
	}
	user, err := s.keypairUser(c, c.Query("user_id"), "index")
	if err != nil {
		return nil, err
	}
	ks := s.b.State().Keypairs(user)
	out := make([]map[string]keypairView, 0, len(ks))
	for _, k := range ks {
		v := keypairView{Name: k.Name, PublicKey: k.PublicKey, Fingerprint: k.Fingerprint}
		if atLeast(c, 2, 2) {
			v.Type = keypairTypeOf(k.Type)
		}
		out = append(out, map[string]keypairView{"keypair": v})
	}
	return map[string]any{"keypairs": out}, nil
}

func (s *service) getKeypair(c *rest.Ctx) (any, error) {
	if err := s.keypairOwner(c, rest.Read); err != nil {
		return nil, err
	}
	user, err := s.keypairUser(c, c.Query("user_id"), "show")
	if err != nil {
		return nil, err
	}
	name := c.Var("name")
	k, ok := s.b.State().Keypair(user, name)
	if !ok {
		return nil, rest.NotFoundf("Keypair %s not found for user %s", name, user)
	}
	view := map[string]any{
		"name": k.Name, "public_key": k.PublicKey, "fingerprint": k.Fingerprint, "user_id": k.UserID,
		"created_at": fmtUSG(k.CreatedAt), "updated_at": nil, "deleted": false, "deleted_at": nil,
	}
	if atLeast(c, 2, 2) {
		view["type"] = keypairTypeOf(k.Type)
	}
	return map[string]any{"keypair": view}, nil
}

func (s *service) createKeypair(c *rest.Ctx) (any, error) {
	if err := s.keypairOwner(c, rest.Write); err != nil {
		return nil, err
	}
	var req struct {
		Name      *string `json:"name"`
		PublicKey *string `json:"public_key"`
		Type      *string `json:"type"`    // 2.2
		UserID    *string `json:"user_id"` // 2.10
	}
	if err := decodeBody(c, "keypair", &req); err != nil {
		return nil, err
	}
	if req.Name == nil {
		return nil, rest.BadRequest("Invalid input for field/attribute keypair. 'name' is a required property")
	}
	if err := validName("name", *req.Name); err != nil {
		return nil, err
	}
	if strings.ContainsAny(*req.Name, "/\\") {
		return nil, rest.BadRequest("Keypair data is invalid: Keypair name contains unsafe characters")
	}
	if req.UserID != nil && !atLeast(c, 2, 10) {
		return nil, rest.BadRequest("Invalid input for field/attribute keypair. Additional properties are not allowed ('user_id' was unexpected)")
	}
	named := ""
	if req.UserID != nil {
		named = *req.UserID
	}
	user, err := s.keypairUser(c, named, "create")
	if err != nil {
		return nil, err
	}
	typ, err := keypairType(c, req.Type)
	if err != nil {
		return nil, err
	}
	k := statedb.Keypair{Name: *req.Name, UserID: user, Type: typ, CreatedAt: s.b.Now()}
	view := keypairView{Name: k.Name, UserID: k.UserID}
	if atLeast(c, 2, 2) {
		view.Type = typ
	}
	if req.PublicKey != nil {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*req.PublicKey))
		if err != nil {
			return nil, rest.BadRequest("Keypair data is invalid: failed to generate fingerprint")
		}
		k.PublicKey = strings.TrimSpace(*req.PublicKey)
		k.Fingerprint = ssh.FingerprintLegacyMD5(pub)
	} else {
		pub, priv, err := generateKey(k.Name)
		if err != nil {
			return nil, err
		}
		k.PublicKey, view.PrivateKey = pub, priv
		parsed, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
		if err != nil {
			return nil, fmt.Errorf("parse generated key: %w", err)
		}
		k.Fingerprint = ssh.FingerprintLegacyMD5(parsed)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdCreateKeypair, k); err != nil {
		return nil, err
	}
	view.PublicKey, view.Fingerprint = k.PublicKey, k.Fingerprint
	return keypairCreated(c, view), nil
}

// generateKey makes an ed25519 key pair: the public key in authorized_keys
// form and the private key as an OpenSSH PEM block.
func generateKey(comment string) (pub, priv string, err error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pk)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(sk, comment)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
	return pub, string(pem.EncodeToMemory(block)), nil
}

func (s *service) deleteKeypair(c *rest.Ctx) (any, error) {
	if err := s.keypairOwner(c, rest.Write); err != nil {
		return nil, err
	}
	user, err := s.keypairUser(c, c.Query("user_id"), "delete")
	if err != nil {
		return nil, err
	}
	name := c.Var("name")
	if _, ok := s.b.State().Keypair(user, name); !ok {
		return nil, rest.NotFoundf("Keypair %s not found for user %s", name, user)
	}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdDeleteKeypair, statedb.DeleteKeypairCmd{UserID: user, Name: name}); err != nil {
		return nil, err
	}
	return keypairDeleted(c), nil
}
