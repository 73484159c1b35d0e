package network

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/peerstack/peerstack/rest"
)

// apiError is a failure with its Neutron error type.
type apiError struct {
	status int
	typ    string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func notFound(kind, id string) error {
	return &apiError{status: http.StatusNotFound, typ: strings.ReplaceAll(kind, " ", "") + "NotFound", msg: fmt.Sprintf("%s %s could not be found.", kind, id)}
}

func forbidden(kind string) error {
	return &apiError{status: http.StatusForbidden, typ: "PolicyNotAuthorized",
		msg: fmt.Sprintf("The request you have made on this %s is not allowed by policy.", strings.ToLower(kind))}
}

// policyDenied is Neutron's answer to an attribute its policy reserves:
// 403 PolicyNotAuthorized "(rule:<action>:<attr>) is disallowed by policy".
func policyDenied(action, attr string) error {
	return &apiError{status: http.StatusForbidden, typ: "PolicyNotAuthorized",
		msg: fmt.Sprintf("(rule:%s and rule:%s:%s) is disallowed by policy", action, action, attr)}
}

func badRequest(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, typ: "InvalidInput", msg: fmt.Sprintf(format, args...)}
}

func conflict(typ, format string, args ...any) error {
	return &apiError{status: http.StatusConflict, typ: typ, msg: fmt.Sprintf(format, args...)}
}

// errorBody is {"NeutronError":{"type","message","detail"}}.
type errorBody struct {
	NeutronError neutronError `json:"NeutronError"`
}

type neutronError struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Detail  string `json:"detail"`
}

// neutronErrors renders errors the framework raises itself (401, 5xx).
func neutronErrors(w http.ResponseWriter, status int, title, msg string) {
	typ := "HTTP" + strings.ReplaceAll(title, " ", "")
	rest.WriteJSON(w, status, errorBody{neutronError{Type: typ, Message: msg}})
}

// wrap renders a handler's failures as Neutron errors with their types.
// Server errors go back to the framework, which logs them.
func wrap(h rest.HandlerFunc) rest.HandlerFunc {
	return func(c *rest.Ctx) (any, error) {
		v, err := h(c)
		if err == nil {
			return v, nil
		}
		var ae *apiError
		if errors.As(err, &ae) {
			return &rest.Response{Status: ae.status, Body: errorBody{neutronError{Type: ae.typ, Message: ae.msg}}}, nil
		}
		status, msg, hdr := rest.StatusOf(err)
		if status >= http.StatusInternalServerError {
			return nil, err
		}
		return &rest.Response{Status: status, Header: hdr, Body: errorBody{neutronError{Type: classify(status, msg), Message: msg}}}, nil
	}
}

// conflictTypes map the leading words of the FSM's conflict messages
// (consensus/statedb networks_apply.go and ipam.go) to Neutron types.
var conflictTypes = []struct{ prefix, typ string }{
	{"No more IP addresses available", "IpAddressGenerationFailure"},
	{"IP address ", "IpAddressAlreadyAllocated"},
	{"Unable to complete operation on network", "NetworkInUse"},
	{"Unable to complete operation on subnet", "SubnetInUse"},
	{"Unable to create the network. The VNI", "TunnelIdInUse"},
	{"Unable to create the network. No VNI", "NoNetworkAvailable"},
	{"Unable to complete operation for network", "MacAddressInUse"},
	{"Unable to generate a unique MAC", "MacAddressGenerationFailure"},
	{"Gateway ip", "GatewayConflictWithAllocationPools"},
	{"Router interface for subnet", "RouterInterfaceInUseByFloatingIP"},
	{"Router ", "RouterInUse"},
	{"Gateway cannot be updated for router", "RouterExternalGatewayInUseByFloatingIp"},
	{"Cannot associate floating IP", "FloatingIPPortAlreadyAssociated"},
	{"Port ", "ServicePortInUse"},
	{"Unable to complete operation on port", "PortInUse"},
	{"Unable to create the flat network", "FlatNetworkInUse"},
	{"Unable to create the network. The VLAN", "VlanIdInUse"},
}

// otherTypes name the Neutron types of 400 and 404 state errors whose
// messages do not follow the generic pattern (consensus/statedb
// routers_apply.go and floatingips_apply.go).
var otherTypes = []struct {
	status      int
	prefix, typ string
}{
	{http.StatusNotFound, "Floating IP ", "FloatingIPNotFound"},
	{http.StatusNotFound, "External network ", "ExternalGatewayForFloatingIPNotFound"},
	{http.StatusNotFound, "Router ", "RouterInterfaceNotFoundForSubnet"},
	{http.StatusBadRequest, "Bad ", "BadRequest"},
	{http.StatusBadRequest, "Invalid format for routes", "InvalidRoutes"},
}

// classify names the Neutron error type of a state error.
func classify(status int, msg string) string {
	if typ, ok := secGroupErrorType(msg); ok && status < http.StatusInternalServerError {
		return typ
	}
	for _, o := range otherTypes {
		if status == o.status && strings.HasPrefix(msg, o.prefix) && !(o.prefix == "Router " && strings.Contains(msg, "could not be found")) {
			return o.typ
		}
	}
	switch status {
	case http.StatusNotFound:
		if kind, _, ok := strings.Cut(msg, " "); ok && strings.Contains(msg, "could not be found") {
			return kind + "NotFound"
		}
		return "HTTPNotFound"
	case http.StatusConflict:
		for _, ct := range conflictTypes {
			if strings.HasPrefix(msg, ct.prefix) {
				return ct.typ
			}
		}
		return "Conflict"
	case http.StatusBadRequest:
		return "InvalidInput"
	case http.StatusForbidden:
		return "PolicyNotAuthorized"
	case http.StatusUnauthorized:
		return "HTTPUnauthorized"
	case http.StatusRequestEntityTooLarge:
		return "HTTPRequestEntityTooLarge"
	case http.StatusServiceUnavailable:
		return "ServiceUnavailable"
	}
	return "HTTP" + strings.ReplaceAll(http.StatusText(status), " ", "")
}
