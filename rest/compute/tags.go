package compute

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Server tags (2.26): /servers/{id}/tags.

// validTag is Nova's tag rule: 1-60 characters, no "/" or ",".
func validTag(tag string) error {
	if tag == "" || len([]rune(tag)) > 60 || strings.ContainsAny(tag, "/,") {
		return rest.BadRequest("Invalid input for field/attribute tags. Value: %s. Tag must be 1 to 60 characters long and must not contain '/' or ','", tag)
	}
	return nil
}

// parseTags reads a tag list (server create's "tags" or PUT /tags).
func parseTags(raw json.RawMessage) ([]string, error) {
	var tags []string
	if err := json.Unmarshal(raw, &tags); err != nil {
		return nil, rest.BadRequest("Invalid input for field/attribute tags. Value: %s. It is not an array of strings", raw)
	}
	if len(tags) > statedb.MaxInstanceTags {
		return nil, rest.BadRequest("Invalid input for field/attribute tags. Value: %s. It is too long (at most %d tags)", raw, statedb.MaxInstanceTags)
	}
	for _, t := range tags {
		if err := validTag(t); err != nil {
			return nil, err
		}
	}
	return tags, nil
}

func tagsOf(i *statedb.Instance) []string {
	if i.Tags == nil {
		return []string{}
	}
	return i.Tags
}

// tagServer returns the server of a tag request, which needs 2.26.
func (s *service) tagServer(c *rest.Ctx, access rest.Access) (*statedb.Instance, error) {
	if !atLeast(c, 2, 26) {
		return nil, rest.NotFoundf("The resource could not be found.")
	}
	inst, err := s.server(c, s.b.State(), access)
	if err != nil {
		return nil, err
	}
	if access == rest.Write {
		if err := s.checkLocked(c, inst); err != nil {
			return nil, err
		}
	}
	return inst, nil
}

func (s *service) proposeTags(c *rest.Ctx, cmd statedb.SetInstanceTagsCmd) (*statedb.Instance, error) {
	cmd.By = s.actionBy(c)
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdSetInstanceTags, cmd); err != nil {
		return nil, err
	}
	got, ok := s.b.State().Instance(cmd.ID)
	if !ok {
		return nil, rest.NotFoundf("Instance %s could not be found.", cmd.ID)
	}
	return got, nil
}

func (s *service) listTags(c *rest.Ctx) (any, error) {
	inst, err := s.tagServer(c, rest.Read)
	if err != nil {
		return nil, err
	}
	return map[string]any{"tags": tagsOf(inst)}, nil
}

func (s *service) replaceTags(c *rest.Ctx) (any, error) {
	inst, err := s.tagServer(c, rest.Write)
	if err != nil {
		return nil, err
	}
	var env map[string]json.RawMessage
	if err := c.Decode(&env); err != nil {
		return nil, err
	}
	raw, ok := env["tags"]
	if !ok || len(env) != 1 {
		return nil, rest.BadRequest("Invalid input for field/attribute tags. 'tags' is a required property")
	}
	tags, err := parseTags(raw)
	if err != nil {
		return nil, err
	}
	got, err := s.proposeTags(c, statedb.SetInstanceTagsCmd{ID: inst.ID, Replace: true, Tags: tags})
	if err != nil {
		return nil, err
	}
	return map[string]any{"tags": tagsOf(got)}, nil
}

func (s *service) deleteAllTags(c *rest.Ctx) (any, error) {
	inst, err := s.tagServer(c, rest.Write)
	if err != nil {
		return nil, err
	}
	if _, err := s.proposeTags(c, statedb.SetInstanceTagsCmd{ID: inst.ID, Replace: true}); err != nil {
		return nil, err
	}
	return noContent(), nil
}

func (s *service) checkTag(c *rest.Ctx) (any, error) {
	inst, err := s.tagServer(c, rest.Read)
	if err != nil {
		return nil, err
	}
	for _, t := range inst.Tags {
		if t == c.Var("tag") {
			return noContent(), nil
		}
	}
	return nil, rest.NotFoundf("Tag %s could not be found.", c.Var("tag"))
}

func (s *service) addTag(c *rest.Ctx) (any, error) {
	inst, err := s.tagServer(c, rest.Write)
	if err != nil {
		return nil, err
	}
	tag := c.Var("tag")
	if err := validTag(tag); err != nil {
		return nil, err
	}
	for _, t := range inst.Tags {
		if t == tag {
			return noContent(), nil
		}
	}
	if len(inst.Tags) >= statedb.MaxInstanceTags {
		return nil, rest.BadRequest("The number of tags exceeded the per-server limit %d", statedb.MaxInstanceTags)
	}
	if _, err := s.proposeTags(c, statedb.SetInstanceTagsCmd{ID: inst.ID, Add: []string{tag}}); err != nil {
		return nil, err
	}
	r := &rest.Response{Status: http.StatusCreated, Header: http.Header{}}
	r.Header.Set("Location", base(c, s.b.State())+"/compute/v2.1/servers/"+inst.ID+"/tags/"+tag)
	return r, nil
}

func (s *service) deleteTag(c *rest.Ctx) (any, error) {
	inst, err := s.tagServer(c, rest.Write)
	if err != nil {
		return nil, err
	}
	if _, err := s.proposeTags(c, statedb.SetInstanceTagsCmd{ID: inst.ID, Remove: []string{c.Var("tag")}}); err != nil {
		return nil, err
	}
	return noContent(), nil
}
