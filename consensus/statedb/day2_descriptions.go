package statedb

// Descriptions set after create: a server's (compute 2.19, PUT
// /servers/{id}) and a flavor's (compute 2.55, PUT /flavors/{id}). Each
// is its own command so that a host of an older release, which would
// drop an unknown field of an existing command, refuses them instead
// (they are gated on the release that added them).

// SetDescriptionCmd sets the description of a server or flavor ("" clears
// it).
type SetDescriptionCmd struct {
	ID          string `json:"id"`
	Description string `json:"description"`
}

func applySetInstanceDescription(t *Txn, c *Command) error {
	r, err := decode[SetDescriptionCmd](c)
	if err != nil {
		return err
	}
	inst, err := instanceOf(t, r.ID)
	if err != nil {
		return err
	}
	cp := *inst
	cp.Description, cp.UpdatedAt = r.Description, c.Time
	return t.insert(tblInstances, &cp)
}

func applySetFlavorDescription(t *Txn, c *Command) error {
	r, err := decode[SetDescriptionCmd](c)
	if err != nil {
		return err
	}
	f, ok := t.read().Flavor(r.ID)
	if !ok {
		return Errorf(KindNotFound, "Flavor %s could not be found.", r.ID)
	}
	cp := *f
	cp.Description = r.Description
	return t.insert(tblFlavors, &cp)
}
