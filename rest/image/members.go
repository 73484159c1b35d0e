package image

import (
	"net/http"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// sharedImage loads a shared image for member operations: the owner
// manages members (Write); members may read (and only see themselves).
func (s *service) sharedImage(c *rest.Ctx, access rest.Access) (*statedb.Image, error) {
	img, err := s.loadImage(c, access)
	if err != nil {
		return nil, err
	}
	if img.Visibility != "shared" {
		return nil, rest.Forbiddenf("Only shared images have members.")
	}
	return img, nil
}

// managesMembers reports whether the caller owns the image (or is admin).
func managesMembers(c *rest.Ctx, img *statedb.Image) bool {
	return isAdmin(c) || c.Cred.ProjectID == img.ProjectID
}

func (s *service) listMembers(c *rest.Ctx) (any, error) {
	img, err := s.sharedImage(c, rest.Read)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, m := range img.Members {
		if managesMembers(c, img) || m.ProjectID == c.Cred.ProjectID {
			out = append(out, memberView(img.ID, m))
		}
	}
	return map[string]any{"members": out, "schema": "/v2/schemas/members"}, nil
}

func (s *service) addMember(c *rest.Ctx) (any, error) {
	img, err := s.sharedImage(c, rest.Write)
	if err != nil {
		return nil, err
	}
	var body struct {
		Member *string `json:"member"`
	}
	if err := c.Decode(&body); err != nil {
		return nil, err
	}
	if body.Member == nil || *body.Member == "" || len(*body.Member) > 255 {
		return nil, rest.BadRequest("The body must be {\"member\": \"<project id>\"}.")
	}
	if len(img.Members) >= statedb.MaxImageMembers {
		return nil, tooLarge("An image may have at most %d members.", statedb.MaxImageMembers)
	}
	cmd := statedb.ImageMemberCmd{ImageID: img.ID, MemberID: *body.Member}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdAddImageMember, cmd); err != nil {
		return nil, err
	}
	return s.memberOf(img.ID, *body.Member)
}

// memberOf reads back one membership.
func (s *service) memberOf(imageID, member string) (any, error) {
	img, ok := s.b.State().Image(imageID)
	if ok {
		for _, m := range img.Members {
			if m.ProjectID == member {
				return memberView(img.ID, m), nil
			}
		}
	}
	return nil, rest.NotFoundf("Member %s not found on image %s", member, imageID)
}

func (s *service) showMember(c *rest.Ctx) (any, error) {
	img, err := s.sharedImage(c, rest.Read)
	if err != nil {
		return nil, err
	}
	member := c.Var("member_id")
	if !managesMembers(c, img) && member != c.Cred.ProjectID {
		return nil, rest.NotFoundf("Member %s not found on image %s", member, img.ID)
	}
	return s.memberOf(img.ID, member)
}

// updateMember lets a member accept or reject an image shared with it;
// the owner may not decide for the member.
func (s *service) updateMember(c *rest.Ctx) (any, error) {
	img, err := s.sharedImage(c, rest.Read)
	if err != nil {
		return nil, err
	}
	member := c.Var("member_id")
	if member != c.Cred.ProjectID && !isAdmin(c) {
		if managesMembers(c, img) {
			return nil, rest.Forbiddenf("Only the member can change its membership status.")
		}
		return nil, rest.NotFoundf("Member %s not found on image %s", member, img.ID)
	}
	var body struct {
		Status string `json:"status"`
	}
	if err := c.Decode(&body); err != nil {
		return nil, err
	}
	switch body.Status {
	case statedb.ImageMemberPending, statedb.ImageMemberAccepted, statedb.ImageMemberRejected:
	default:
		return nil, rest.BadRequest("Invalid status: %q (pending, accepted or rejected)", body.Status)
	}
	cmd := statedb.ImageMemberCmd{ImageID: img.ID, MemberID: member, Status: body.Status}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdUpdateImageMember, cmd); err != nil {
		return nil, err
	}
	return s.memberOf(img.ID, member)
}

func (s *service) removeMember(c *rest.Ctx) (any, error) {
	img, err := s.sharedImage(c, rest.Write)
	if err != nil {
		return nil, err
	}
	cmd := statedb.ImageMemberCmd{ImageID: img.ID, MemberID: c.Var("member_id")}
	if _, err := rest.Propose(c.Context(), s.b, statedb.CmdRemoveImageMember, cmd); err != nil {
		return nil, err
	}
	return &rest.Response{Status: http.StatusNoContent}, nil
}
