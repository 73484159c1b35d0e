package gossip

import (
	"bytes"
	"errors"
	"fmt"
)

// Key rotation. memberlist decrypts incoming gossip with any key of its
// keyring and encrypts outgoing gossip with the primary one, so a cluster
// changes its key without a partition in three steps, each done on every
// member before the next starts: install the new key beside the old one,
// make the new key primary, remove the old key. A host holding only a
// removed key can then neither join nor be heard.

// checkKey refuses a key memberlist cannot use (AES-128, -192 or -256).
func checkKey(k []byte) error {
	switch len(k) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("secret key is %d bytes, want 16, 24 or 32", len(k))
}

// SetKeys makes keys, and only them, this host's gossip keys, keys[0] the
// primary one (used to send). Keys missing are installed first and keys not
// listed removed last, so each step leaves a keyring that still reads what
// the others send.
func (g *Gossip) SetKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("gossip: set keys: no key given")
	}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return fmt.Errorf("gossip: set keys: %w", err)
		}
	}
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return fmt.Errorf("gossip: set keys: %w", ErrShutdown)
	}
	for _, k := range keys {
		if err := g.keyring.AddKey(append([]byte(nil), k...)); err != nil {
			return fmt.Errorf("gossip: install key: %w", err)
		}
	}
	if err := g.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("gossip: use key: %w", err)
	}
	for _, k := range g.keyring.GetKeys() {
		if !containsKey(keys, k) {
			if err := g.keyring.RemoveKey(k); err != nil {
				return fmt.Errorf("gossip: remove key: %w", err)
			}
		}
	}
	return nil
}

// Keys returns this host's gossip keys, the primary one first.
func (g *Gossip) Keys() [][]byte {
	primary := g.keyring.GetPrimaryKey()
	out := [][]byte{append([]byte(nil), primary...)}
	for _, k := range g.keyring.GetKeys() {
		if !bytes.Equal(k, primary) {
			out = append(out, append([]byte(nil), k...))
		}
	}
	return out
}

func containsKey(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}
