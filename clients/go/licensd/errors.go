package licensd

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the ErrorInfo domain of every error licensd itself raises.
const ErrorDomain = "licensd.dev"

// Error is a failed call as licensd describes it: the gRPC code and message, plus the
// google.rpc.ErrorInfo (a stable UPPER_SNAKE_CASE reason and metadata such as the
// offending field or id) and google.rpc.BadRequest details licensd attaches.
//
// Every call made through a Client fails with an *Error; it also satisfies
// status.FromError (GRPCStatus), so code written for plain gRPC keeps working.
type Error struct {
	Code     codes.Code
	Message  string
	Reason   string            // ErrorInfo.reason, e.g. "INVALID_ARGUMENT", "LICENSE_NOT_FOUND"
	Domain   string            // ErrorInfo.domain, "licensd.dev" for licensd's own errors
	Metadata map[string]string // ErrorInfo.metadata, e.g. {"field": "name"}
	// FieldViolations lists every field a request broke (google.rpc.BadRequest).
	FieldViolations []FieldViolation
	status          *status.Status
	cause           error // set for errors raised here rather than by the server
}

// FieldViolation is one entry of a google.rpc.BadRequest: the field path as
// protovalidate names it ("events[2].metric") and what is wrong with it.
type FieldViolation struct {
	Field       string
	Description string
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("licensd: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("licensd: %s: %s", e.Code, e.Message)
}

// Unwrap gives the local cause, e.g. ErrBadSignature for an answer Validate refused.
func (e *Error) Unwrap() error { return e.cause }

// GRPCStatus lets status.FromError and status.Code read an *Error.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Field is the request field the error names (ErrorInfo metadata "field"), if any.
func (e *Error) Field() string { return e.Metadata["field"] }

// ErrorOf describes err as an *Error: a gRPC status error with its details decoded, a
// context error as CANCELED or DEADLINE_EXCEEDED, anything else as UNKNOWN. It returns
// nil for a nil err.
func ErrorOf(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	st, ok := status.FromError(err)
	if !ok {
		switch {
		case errors.Is(err, context.Canceled):
			st = status.New(codes.Canceled, err.Error())
		case errors.Is(err, context.DeadlineExceeded):
			st = status.New(codes.DeadlineExceeded, err.Error())
		default:
			st = status.New(codes.Unknown, err.Error())
		}
	}
	e = &Error{Code: st.Code(), Message: st.Message(), Metadata: map[string]string{}, status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			// The first ErrorInfo is licensd's; a proxy could append others.
			if e.Reason == "" {
				e.Reason, e.Domain = d.GetReason(), d.GetDomain()
				for k, v := range d.GetMetadata() {
					e.Metadata[k] = v
				}
			}
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return e
}

// wrapError turns a call's error into an *Error, leaving nil alone.
func wrapError(err error) error {
	if err == nil {
		return nil
	}
	return ErrorOf(err)
}
