package network

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// taggable is a resource with the standard-attr-tag sub-resource
// /v2.0/<coll>/{id}/tags.
type taggable struct {
	coll, kind string
	// tagKind names the resource in statedb.TagResourceCmd.
	tagKind string
	// read finds the object the caller may see: owner, public and tags.
	read func(s *service, c *rest.Ctx, sn *statedb.Snapshot, id string) (owner string, public bool, tags []string, err error)
	// cmd builds the update that sets the tags.
	cmd func(id string, tags []string) (statedb.CmdType, any)
}

var taggables = []taggable{
	{"networks", "Network", statedb.TagNetwork,
		func(s *service, c *rest.Ctx, sn *statedb.Snapshot, id string) (string, bool, []string, error) {
			n, err := s.readNetwork(c, sn, id)
			if err != nil {
				return "", false, nil, err
			}
			return n.ProjectID, networkPublic(n), n.Tags, nil
		},
		func(id string, tags []string) (statedb.CmdType, any) {
			return statedb.CmdUpdateNetwork, statedb.UpdateNetworkCmd{ID: id, Tags: &tags}
		}},
	{"subnets", "Subnet", statedb.TagSubnet,
		func(s *service, c *rest.Ctx, sn *statedb.Snapshot, id string) (string, bool, []string, error) {
			sub, err := s.readSubnet(c, sn, id)
			if err != nil {
				return "", false, nil, err
			}
			return sub.ProjectID, subnetPublic(sn, sub), sub.Tags, nil
		},
		func(id string, tags []string) (statedb.CmdType, any) {
			return statedb.CmdUpdateSubnet, statedb.UpdateSubnetCmd{ID: id, Tags: &tags}
		}},
	{"ports", "Port", statedb.TagPort,
		func(s *service, c *rest.Ctx, sn *statedb.Snapshot, id string) (string, bool, []string, error) {
			p, err := s.readPort(c, sn, id)
			if err != nil {
				return "", false, nil, err
			}
			return p.ProjectID, false, p.Tags, nil
		},
		func(id string, tags []string) (statedb.CmdType, any) {
			return statedb.CmdUpdatePort, statedb.UpdatePortCmd{ID: id, Tags: &tags}
		}},
}

func (s *service) tagRoutes() []rest.Route {
	var out []rest.Route
	for _, tg := range taggables {
		p := "/v2.0/" + tg.coll + "/{id}/tags"
		out = append(out,
			rest.Route{Method: http.MethodGet, Path: p, Auth: rest.Token, Handler: s.listTags(tg)},
			rest.Route{Method: http.MethodPut, Path: p, Auth: rest.Token, Handler: s.replaceTags(tg)},
			rest.Route{Method: http.MethodDelete, Path: p, Auth: rest.Token, Handler: s.clearTags(tg)},
			rest.Route{Method: http.MethodGet, Path: p + "/{tag}", Auth: rest.Token, Handler: s.hasTag(tg)},
			rest.Route{Method: http.MethodPut, Path: p + "/{tag}", Auth: rest.Token, Handler: s.addTag(tg)},
			rest.Route{Method: http.MethodDelete, Path: p + "/{tag}", Auth: rest.Token, Handler: s.removeTag(tg)},
		)
	}
	return out
}

// tagsForWrite reads the object and checks that the caller may change it.
func (s *service) tagsForWrite(c *rest.Ctx, tg taggable) (string, []string, error) {
	id := c.Var("id")
	owner, public, tags, err := tg.read(s, c, s.b.State(), id)
	if err != nil {
		return "", nil, err
	}
	if err := s.check(c, rest.Write, owner, public, tg.kind, id); err != nil {
		return "", nil, err
	}
	return id, tags, nil
}

func (s *service) setTags(c *rest.Ctx, tg taggable, id string, tags []string) error {
	typ, payload := tg.cmd(id, tags)
	_, err := rest.Propose(c.Context(), s.b, typ, payload)
	return err
}

func (s *service) listTags(tg taggable) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		_, _, tags, err := tg.read(s, c, s.b.State(), c.Var("id"))
		if err != nil {
			return nil, err
		}
		return map[string]any{"tags": tagsOf(tags)}, nil
	}
}

func (s *service) replaceTags(tg taggable) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		id, _, err := s.tagsForWrite(c, tg)
		if err != nil {
			return nil, err
		}
		var body struct {
			Tags *[]string `json:"tags"`
		}
		if err := c.Decode(&body); err != nil {
			return nil, badRequest("Malformed request body: %v", err)
		}
		if body.Tags == nil {
			return nil, badRequest("Invalid input for operation: tags is required.")
		}
		tags := slices.Compact(slices.Sorted(slices.Values(*body.Tags)))
		if err := s.setTags(c, tg, id, tags); err != nil {
			return nil, err
		}
		return map[string]any{"tags": tagsOf(tags)}, nil
	}
}

func (s *service) clearTags(tg taggable) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		id, _, err := s.tagsForWrite(c, tg)
		if err != nil {
			return nil, err
		}
		if err := s.setTags(c, tg, id, []string{}); err != nil {
			return nil, err
		}
		return noContent(), nil
	}
}

func (s *service) hasTag(tg taggable) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		_, _, tags, err := tg.read(s, c, s.b.State(), c.Var("id"))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(tags, c.Var("tag")) {
			return nil, tagNotFound(c)
		}
		return noContent(), nil
	}
}

func (s *service) addTag(tg taggable) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		id, tags, err := s.tagsForWrite(c, tg)
		if err != nil {
			return nil, err
		}
		tag := c.Var("tag")
		if !slices.Contains(tags, tag) {
			if _, err := rest.Propose(c.Context(), s.b, statedb.CmdTagResource, statedb.TagResourceCmd{Kind: tg.tagKind, ID: id, Tag: tag}); err != nil {
				return nil, err
			}
		}
		return &rest.Response{Status: http.StatusCreated, Body: json.RawMessage(`null`)}, nil
	}
}

func (s *service) removeTag(tg taggable) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		id, tags, err := s.tagsForWrite(c, tg)
		if err != nil {
			return nil, err
		}
		tag := c.Var("tag")
		if !slices.Contains(tags, tag) {
			return nil, tagNotFound(c)
		}
		_, err = rest.Propose(c.Context(), s.b, statedb.CmdTagResource, statedb.TagResourceCmd{Kind: tg.tagKind, ID: id, Tag: tag, Remove: true})
		var se *statedb.Error
		if errors.As(err, &se) && se.Kind == statedb.KindNotFound && strings.HasPrefix(se.Msg, "Tag ") {
			return nil, tagNotFound(c) // removed by another request meanwhile
		}
		if err != nil {
			return nil, err
		}
		return noContent(), nil
	}
}

func tagNotFound(c *rest.Ctx) error {
	return &apiError{status: http.StatusNotFound, typ: "TagNotFound",
		msg: "Tag " + c.Var("tag") + " could not be found for resource " + c.Var("id") + "."}
}
