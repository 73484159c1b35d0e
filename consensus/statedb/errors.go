package statedb

import (
	"errors"
	"fmt"
)

// Kind classifies a state error; the REST layer maps kinds to statuses.
type Kind string

const (
	KindNotFound  Kind = "not_found"
	KindConflict  Kind = "conflict"
	KindInvalid   Kind = "invalid"
	KindForbidden Kind = "forbidden"
	KindInternal  Kind = "internal"
)

// Sentinels to test with errors.Is.
var (
	ErrNotFound  = &Error{Kind: KindNotFound}
	ErrConflict  = &Error{Kind: KindConflict}
	ErrInvalid   = &Error{Kind: KindInvalid}
	ErrForbidden = &Error{Kind: KindForbidden}
)

// Error is a business failure of a command; it survives forwarding between
// hosts as (kind, message).
type Error struct {
	Kind Kind
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Is matches any *Error of the same kind, so errors.Is(err, ErrNotFound) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind
}

// Errorf builds an *Error.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// AsError returns err as an *Error, wrapping foreign errors as internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: KindInternal, Msg: err.Error()}
}
