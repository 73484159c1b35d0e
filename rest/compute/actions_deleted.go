package compute

import (
	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// actionsServer is the id of the server whose actions are asked for: a
// live one the caller may read, or from 2.21 (as Nova) a deleted one
// whose history the state keeps, for its project's members and admins.
func (s *service) actionsServer(c *rest.Ctx, sn *statedb.Snapshot) (string, error) {
	inst, err := s.server(c, sn, rest.Read)
	if err == nil {
		return inst.ID, nil
	}
	id := c.Var("server_id")
	project, ok := sn.DeletedInstanceProject(id)
	if !ok || !atLeast(c, 2, 21) {
		return "", err
	}
	if err := rest.Check(s.b, c, rest.Read, project, false, "Instance "+id); err != nil {
		return "", err
	}
	return id, nil
}
