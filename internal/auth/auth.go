// Package auth decides who a caller is: it parses and verifies IoT Hub shared
// access signature (SAS) tokens, matches their resource scope, models hub
// access policies and their permissions, and parses connection strings.
//
// Every transport (MQTT, HTTPS, AMQP, the service API) authenticates through
// an Authenticator so that the rules live in one place. Failures are
// reported with sentinel errors that all match ErrUnauthorized, so a
// transport that only needs "refuse with 401 / CONNACK 5" can branch on that
// one value, while tests and logs can tell the reasons apart.
package auth

import "errors"

// ErrUnauthorized matches every authentication or authorization failure
// returned by this package. IoT Hub answers all of them the same way
// (HTTP 401 IotHubUnauthorizedAccess, MQTT CONNACK 0x05).
var ErrUnauthorized = errors.New("unauthorized")

// Reasons for refusing a caller. Each also matches ErrUnauthorized.
var (
	ErrMalformedToken     error = authErr("malformed SAS token")
	ErrExpired            error = authErr("SAS token expired")
	ErrBadSignature       error = authErr("SAS token signature does not match")
	ErrScope              error = authErr("SAS token resource does not cover the target")
	ErrDeviceDisabled     error = authErr("device is disabled")
	ErrInsufficientRights error = authErr("policy lacks a required permission")
)

// ErrUnknownIdentity is what an IdentityStore returns (wrapped) when the
// device or module does not exist. It is deliberately not an
// ErrUnauthorized: the store reports a fact, the Authenticator decides that
// it means "refuse". Any other store error is passed through as an internal
// failure, so a broken database is not reported to clients as bad
// credentials.
var ErrUnknownIdentity = errors.New("unknown device or module identity")

// authErr is a sentinel that also matches ErrUnauthorized.
type authErr string

func (e authErr) Error() string        { return string(e) }
func (e authErr) Is(target error) bool { return target == ErrUnauthorized }

// RightsError reports which permissions a policy token lacked. It matches
// ErrInsufficientRights and therefore ErrUnauthorized.
type RightsError struct {
	Policy  string
	Missing Permission
}

func (e *RightsError) Error() string {
	return "policy " + e.Policy + " lacks " + e.Missing.String()
}

func (e *RightsError) Unwrap() error { return ErrInsufficientRights }
