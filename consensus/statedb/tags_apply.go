package statedb

import "slices"

// Tag kinds of TagResourceCmd: the Neutron resources with a tags
// sub-resource.
const (
	TagNetwork = "network"
	TagSubnet  = "subnet"
	TagPort    = "port"
)

// TagResourceCmd adds or removes one tag of a network, subnet or port.
// Adding and removing one tag are commands of their own, applied to the
// tags the resource has when the entry applies: a handler that read the
// tags, changed one and proposed the whole list would lose a tag another
// host added meanwhile.
type TagResourceCmd struct {
	Kind   string `json:"kind"`
	ID     string `json:"id"`
	Tag    string `json:"tag"`
	Remove bool   `json:"remove,omitempty"`
}

// tagNotFound is the failure of removing a tag the resource does not
// have.
func tagNotFound(tag, id string) error {
	return Errorf(KindNotFound, "Tag %s could not be found for resource %s.", tag, id)
}

func applyTagResource(t *Txn, c *Command) error {
	r, err := decode[TagResourceCmd](c)
	if err != nil {
		return err
	}
	if err := validTags([]string{r.Tag}); err != nil {
		return err
	}
	sn := t.read()
	edit := func(tags []string) ([]string, error) {
		has := slices.Contains(tags, r.Tag)
		switch {
		case r.Remove && !has:
			return nil, tagNotFound(r.Tag, r.ID)
		case r.Remove:
			return slices.DeleteFunc(slices.Clone(tags), func(x string) bool { return x == r.Tag }), nil
		case has:
			return tags, nil
		}
		out := append(slices.Clone(tags), r.Tag)
		return out, validTags(out)
	}
	switch r.Kind {
	case TagNetwork:
		return retag(t, sn, tblNetworks, r.ID, "Network", func(n *Network) *[]string { return &n.Tags }, func(n *Network) { n.Revision++; n.UpdatedAt = c.Time }, edit)
	case TagSubnet:
		return retag(t, sn, tblSubnets, r.ID, "Subnet", func(s *Subnet) *[]string { return &s.Tags }, func(s *Subnet) { s.Revision++; s.UpdatedAt = c.Time }, edit)
	case TagPort:
		return retag(t, sn, tblPorts, r.ID, "Port", func(p *Port) *[]string { return &p.Tags }, func(p *Port) { p.Revision++; p.UpdatedAt = c.Time }, edit)
	}
	return Errorf(KindInvalid, "Refused command: unknown tag kind %q.", r.Kind)
}

// retag applies edit to the tags of object id in tbl.
func retag[T any](t *Txn, sn *Snapshot, tbl, id, what string, tags func(*T) *[]string, touch func(*T),
	edit func([]string) ([]string, error)) error {
	o, ok := get[T](sn, tbl, id)
	if !ok {
		return Errorf(KindNotFound, "%s %s could not be found.", what, id)
	}
	cp := *o
	old := *tags(&cp)
	next, err := edit(old)
	if err != nil {
		return err
	}
	if len(next) == len(old) && slices.Equal(next, old) {
		return nil
	}
	*tags(&cp) = next
	touch(&cp)
	return t.insert(tbl, &cp)
}
