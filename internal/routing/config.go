// Package routing decides where device-to-cloud messages and hub events go (spec section 8):
// the routes, the fallback route, the custom endpoints' specs and the message enrichments of
// spec section 10, validated strictly and compiled once per configuration.
//
// # The flow
//
// The decision is made once, at ingestion: hub.Submit asks the Router for it with the routes in
// force and stores it in the message record (message.Message.Routing) before appending to the
// telemetry log. The log is the ingestion log: the built-in endpoint "events" is the log filtered
// by message.ToEndpoint("events"), and each custom endpoint's deliverer (package
// routing/endpoint) reads the same log with its own durable cursor and takes what is its own.
// Enrichments are not stored: they are stamped when a message leaves through an endpoint
// (Router.Enrich), with the configuration in force at that time.
//
//   - A hub with no routes and the fallback enabled towards events (the default) records no
//     decision (Routing = nil): every message belongs to the built-in endpoint, at no cost.
//   - A device message that no route matches goes to the fallback route's endpoint ("$fallback"
//     in the matched routes) when the fallback is enabled. Otherwise it is routed nowhere: it is
//     still stored (a device's message is acknowledged once stored), but no endpoint sees it;
//     `tether monitor --routes` (the raw tap) still shows it until retention removes it.
//   - Messages of several matching routes that share an endpoint are delivered there once.
//   - Hub events (DeviceLifecycleEvents, DeviceConnectionStateEvents) are routed by their
//     source; the fallback never applies to them, and they are only stored when some endpoint
//     receives them.
//   - Because the built-in endpoint skips what is not routed to it, its sequence numbers (those
//     of the shared log) have gaps once routes exist.
//
// # Configuration sources and precedence
//
// The configuration comes from the `routing:` section of the hub's YAML configuration file
// (`tether serve --config`), reloaded on SIGHUP and when the file changes, and from the service
// API (PUT /configuration/routing), persisted in the data directory as routing.json. A
// configuration set through the API replaces the file's routes, endpoints, fallback route and
// enrichments as a whole until it is removed (DELETE /configuration/routing, `tether route
// reset`); the file's `limits` always apply and cannot be changed through the API. See Manager.
package routing

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/tetherhub/tether/internal/routing/endpoint"
	"github.com/tetherhub/tether/internal/routing/query"
)

// Route sources (ARM RouteProperties.source). Tether emits DeviceMessages,
// DeviceLifecycleEvents and DeviceConnectionStateEvents; routes with the other sources are
// accepted, so IoT Hub configurations load unchanged, but never match anything.
const (
	SourceDeviceMessages              = "DeviceMessages"
	SourceTwinChangeEvents            = "TwinChangeEvents"
	SourceDeviceLifecycleEvents       = "DeviceLifecycleEvents"
	SourceDeviceJobLifecycleEvents    = "DeviceJobLifecycleEvents"
	SourceDigitalTwinChangeEvents     = "DigitalTwinChangeEvents"
	SourceDeviceConnectionStateEvents = "DeviceConnectionStateEvents"
	SourceMqttBrokerMessages          = "MqttBrokerMessages"
)

var sources = []string{
	SourceDeviceMessages, SourceTwinChangeEvents, SourceDeviceLifecycleEvents,
	SourceDeviceJobLifecycleEvents, SourceDigitalTwinChangeEvents,
	SourceDeviceConnectionStateEvents, SourceMqttBrokerMessages,
}

// FallbackRouteName is the fallback route's name, as ARM names it and as it appears in a
// message's matched routes.
const FallbackRouteName = "$fallback"

// BuiltInEndpoint is the built-in endpoint's name.
const BuiltInEndpoint = "events"

// Reserved endpoint names (spec 8.4): no custom endpoint may take them.
var reservedEndpoints = []string{"events", "fileNotifications", "$default"}

// IoT Hub's limits (basic and standard tiers, spec 11.3), the defaults of Limits.
const (
	DefaultMaxRoutes      = 100
	DefaultMaxEndpoints   = 10
	DefaultMaxEnrichments = 10
)

// maxEnrichmentKey bounds an enrichment key (the length IoT Hub documents is unconfirmed).
const maxEnrichmentKey = 128

// Config is a routing configuration: IoT Hub's routing properties (ARM
// IotHubProperties.routing) with Tether's endpoint specs.
type Config struct {
	// Endpoints are the custom endpoints (package routing/endpoint).
	Endpoints []endpoint.Spec `json:"endpoints,omitempty"`
	Routes    []Route         `json:"routes"`
	// FallbackRoute nil means the default: enabled, to the built-in endpoint.
	FallbackRoute *FallbackRoute `json:"fallbackRoute,omitempty"`
	Enrichments   []Enrichment   `json:"enrichments"`
}

// Route is one route (ARM RouteProperties).
type Route struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	// Condition is a routing query (spec 9); empty means true.
	Condition string `json:"condition,omitempty"`
	// EndpointNames holds exactly one endpoint, "events" or a custom endpoint's name.
	EndpointNames []string `json:"endpointNames"`
	// IsEnabled nil means enabled.
	IsEnabled *bool `json:"isEnabled,omitempty"`
}

// Enabled reports whether the route is in force.
func (r Route) Enabled() bool { return r.IsEnabled == nil || *r.IsEnabled }

// FallbackRoute is IoT Hub's fallback route: device messages no route matched.
type FallbackRoute struct {
	Name string `json:"name,omitempty"` // "$fallback" when empty
	// Source must be DeviceMessages (or empty).
	Source string `json:"source,omitempty"`
	// Condition must be empty or true.
	Condition string `json:"condition,omitempty"`
	// EndpointNames holds one endpoint; empty means ["events"].
	EndpointNames []string `json:"endpointNames,omitempty"`
	// IsEnabled nil means enabled.
	IsEnabled *bool `json:"isEnabled,omitempty"`
}

// Enabled reports whether the fallback route is in force.
func (f *FallbackRoute) Enabled() bool { return f == nil || f.IsEnabled == nil || *f.IsEnabled }

// Endpoint returns the fallback route's endpoint.
func (f *FallbackRoute) Endpoint() string {
	if f == nil || len(f.EndpointNames) == 0 {
		return BuiltInEndpoint
	}
	return f.EndpointNames[0]
}

// Enrichment adds an application property to messages leaving through the listed endpoints
// (spec 10). Value is a static string, $iothubname, or a twin path ($twin.tags.x,
// $twin.properties.desired.x, $twin.properties.reported.x).
type Enrichment struct {
	Key           string   `json:"key"`
	Value         string   `json:"value"`
	EndpointNames []string `json:"endpointNames"`
}

// Limits bound a configuration; zero fields take IoT Hub's values. Only the operator sets them,
// in the configuration file.
type Limits struct {
	Routes      int `json:"routes,omitempty"`
	Endpoints   int `json:"endpoints,omitempty"`
	Enrichments int `json:"enrichments,omitempty"`
}

// WithDefaults fills zero limits with IoT Hub's.
func (l Limits) WithDefaults() Limits {
	if l.Routes <= 0 {
		l.Routes = DefaultMaxRoutes
	}
	if l.Endpoints <= 0 {
		l.Endpoints = DefaultMaxEndpoints
	}
	if l.Enrichments <= 0 {
		l.Enrichments = DefaultMaxEnrichments
	}
	return l
}

// FieldError is one problem of a configuration: where (a path such as
// `routes[2].condition`) and why.
type FieldError struct {
	Path   string
	Reason string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Reason }

// Errors are the problems of a configuration, in document order. Its Error lists them all,
// one per line.
type Errors []FieldError

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, fe := range e {
		lines[i] = fe.Error()
	}
	if len(lines) == 1 {
		return "invalid routing configuration: " + lines[0]
	}
	return "invalid routing configuration:\n  " + strings.Join(lines, "\n  ")
}

func (e *Errors) add(path, format string, args ...any) {
	*e = append(*e, FieldError{Path: path, Reason: fmt.Sprintf(format, args...)})
}

func (e Errors) err() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// nameRE is the rule for route and endpoint names (ARM).
var nameRE = regexp.MustCompile(`^[A-Za-z0-9\-._]{1,64}$`)

// CanonicalSource returns the source spelled as ARM does, matching case-insensitively.
func CanonicalSource(s string) (string, bool) {
	for _, known := range sources {
		if strings.EqualFold(s, known) {
			return known, true
		}
	}
	return "", false
}

// Validate checks c against the rules of IoT Hub (spec 8.3, 8.4, 10) and the limits, and
// normalizes the spelling of sources. All problems are reported, as Errors.
func (c *Config) Validate(limits Limits) error {
	limits = limits.WithDefaults()
	var errs Errors

	// Endpoints first: routes and enrichments refer to them.
	endpoints := map[string]string{} // lower-case name -> name
	if n := len(c.Endpoints); n > limits.Endpoints {
		errs.add("endpoints", "%d custom endpoints, the limit is %d (the operator can raise it with routing.limits.endpoints in the configuration file)", n, limits.Endpoints)
	}
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		path := fmt.Sprintf("endpoints[%d]", i)
		switch {
		case e.Name == "":
			errs.add(path+".name", "missing")
		case !nameRE.MatchString(e.Name):
			errs.add(path+".name", "%q: names are 1 to 64 characters of A-Z, a-z, 0-9, '-', '.' and '_'", e.Name)
		case isReserved(e.Name):
			errs.add(path+".name", "%q is reserved (events, fileNotifications and $default are)", e.Name)
		default:
			if prev, dup := endpoints[strings.ToLower(e.Name)]; dup {
				errs.add(path+".name", "%q is already the name of another endpoint (%q; names are case-insensitive)", e.Name, prev)
			} else {
				endpoints[strings.ToLower(e.Name)] = e.Name
			}
		}
		endpointErrors(&errs, path, e.Validate())
	}
	exists := func(name string) bool {
		if name == BuiltInEndpoint {
			return true
		}
		_, ok := endpoints[strings.ToLower(name)]
		return ok && endpoints[strings.ToLower(name)] == name
	}
	checkEndpoint := func(path, name string) {
		switch {
		case name == "":
			errs.add(path, "empty endpoint name")
		case exists(name):
		case strings.EqualFold(name, BuiltInEndpoint):
			errs.add(path, "%q: the built-in endpoint is spelled \"events\"", name)
		default:
			if n, ok := endpoints[strings.ToLower(name)]; ok {
				errs.add(path, "%q: no such endpoint; did you mean %q?", name, n)
			} else {
				errs.add(path, "%q: no such endpoint (the built-in one is \"events\"; custom ones are listed under endpoints)", name)
			}
		}
	}

	if n := len(c.Routes); n > limits.Routes {
		errs.add("routes", "%d routes, the limit is %d (the operator can raise it with routing.limits.routes in the configuration file)", n, limits.Routes)
	}
	routeNames := map[string]string{}
	for i := range c.Routes {
		r := &c.Routes[i]
		path := fmt.Sprintf("routes[%d]", i)
		switch {
		case r.Name == "":
			errs.add(path+".name", "missing")
		case !nameRE.MatchString(r.Name):
			errs.add(path+".name", "%q: names are 1 to 64 characters of A-Z, a-z, 0-9, '-', '.' and '_'", r.Name)
		default:
			if prev, dup := routeNames[strings.ToLower(r.Name)]; dup {
				errs.add(path+".name", "%q is already the name of another route (%q; names are case-insensitive)", r.Name, prev)
			} else {
				routeNames[strings.ToLower(r.Name)] = r.Name
			}
		}
		if r.Source == "" {
			errs.add(path+".source", "missing: one of %s", strings.Join(sources, ", "))
		} else if s, ok := CanonicalSource(r.Source); ok {
			r.Source = s
		} else {
			errs.add(path+".source", "%q is not a route source: one of %s", r.Source, strings.Join(sources, ", "))
		}
		if strings.TrimSpace(r.Condition) != "" {
			if _, err := query.Compile(r.Condition); err != nil {
				errs.add(path+".condition", "route %q: %v", r.Name, err)
			}
		}
		switch len(r.EndpointNames) {
		case 0:
			errs.add(path+".endpointNames", "missing: a route has exactly one endpoint")
		case 1:
			checkEndpoint(path+".endpointNames[0]", r.EndpointNames[0])
		default:
			errs.add(path+".endpointNames", "%d endpoints: a route has exactly one endpoint (add a route per endpoint)", len(r.EndpointNames))
		}
	}

	if f := c.FallbackRoute; f != nil {
		if f.Name != "" && f.Name != FallbackRouteName && !nameRE.MatchString(f.Name) {
			errs.add("fallbackRoute.name", "%q: names are 1 to 64 characters of A-Z, a-z, 0-9, '-', '.' and '_'", f.Name)
		}
		if f.Source != "" {
			if s, ok := CanonicalSource(f.Source); !ok || s != SourceDeviceMessages {
				errs.add("fallbackRoute.source", "%q: the fallback route's source is DeviceMessages", f.Source)
			} else {
				f.Source = s
			}
		}
		if c := strings.TrimSpace(f.Condition); c != "" && !strings.EqualFold(c, "true") {
			errs.add("fallbackRoute.condition", "%q: the fallback route's condition is always true", f.Condition)
		}
		switch len(f.EndpointNames) {
		case 0:
		case 1:
			checkEndpoint("fallbackRoute.endpointNames[0]", f.EndpointNames[0])
		default:
			errs.add("fallbackRoute.endpointNames", "%d endpoints: the fallback route has exactly one endpoint", len(f.EndpointNames))
		}
	}

	if n := len(c.Enrichments); n > limits.Enrichments {
		errs.add("enrichments", "%d enrichments, the limit is %d (the operator can raise it with routing.limits.enrichments in the configuration file)", n, limits.Enrichments)
	}
	keys := map[string]string{}
	for i := range c.Enrichments {
		e := &c.Enrichments[i]
		path := fmt.Sprintf("enrichments[%d]", i)
		switch {
		case e.Key == "":
			errs.add(path+".key", "missing")
		case len(e.Key) > maxEnrichmentKey:
			errs.add(path+".key", "%d characters, the limit is %d", len(e.Key), maxEnrichmentKey)
		case !validKey(e.Key):
			errs.add(path+".key", "%q: keys are A-Z, a-z, 0-9, '-', '_' and '.'", e.Key)
		default:
			if prev, dup := keys[strings.ToLower(e.Key)]; dup {
				errs.add(path+".key", "%q is already the key of another enrichment (%q; application property names are case-insensitive)", e.Key, prev)
			} else {
				keys[strings.ToLower(e.Key)] = e.Key
			}
		}
		if e.Value == "" {
			errs.add(path+".value", "missing")
		} else if reason := checkEnrichmentValue(e.Value); reason != "" {
			errs.add(path+".value", "%q: %s", e.Value, reason)
		}
		if len(e.EndpointNames) == 0 {
			errs.add(path+".endpointNames", "missing: an enrichment applies to one or more endpoints")
		}
		for j, name := range e.EndpointNames {
			p := fmt.Sprintf("%s.endpointNames[%d]", path, j)
			if slices.Contains(e.EndpointNames[:j], name) {
				errs.add(p, "%q is listed twice", name)
				continue
			}
			checkEndpoint(p, name)
		}
	}
	return errs.err()
}

func isReserved(name string) bool {
	for _, r := range reservedEndpoints {
		if strings.EqualFold(name, r) {
			return true
		}
	}
	return false
}

func validKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// checkEnrichmentValue returns why v is not a valid enrichment value, or "". A value starting
// with '$' must be one of the variables IoT Hub supports (spec 10).
func checkEnrichmentValue(v string) string {
	if !strings.HasPrefix(v, "$") {
		return ""
	}
	if strings.EqualFold(v, "$iothubname") {
		return ""
	}
	if p, ok := twinPath(v); ok {
		if len(p) == 0 {
			return "a twin path needs a property after $twin.tags, $twin.properties.desired or $twin.properties.reported"
		}
		for _, s := range p {
			if s == "" || strings.ContainsAny(s, " \t()<>@,;:\\\"/?={}[]") {
				return "not a valid twin path"
			}
		}
		return ""
	}
	return "the only variables are $iothubname, $twin.tags.<path>, $twin.properties.desired.<path> and $twin.properties.reported.<path>"
}

// twinPath splits a $twin enrichment value into its path below the twin root, e.g.
// "$twin.tags.a.b" -> ["tags", "a", "b"]. ok is false when v is not under tags or
// properties.desired/reported; the path is empty when nothing follows those.
func twinPath(v string) (path []string, ok bool) {
	parts := strings.Split(v, ".")
	if len(parts) < 2 || !strings.EqualFold(parts[0], "$twin") {
		return nil, false
	}
	switch {
	case strings.EqualFold(parts[1], "tags"):
		if len(parts) == 2 {
			return nil, true
		}
		return parts[1:], true
	case strings.EqualFold(parts[1], "properties") && len(parts) >= 3 &&
		(strings.EqualFold(parts[2], "desired") || strings.EqualFold(parts[2], "reported")):
		if len(parts) == 3 {
			return nil, true
		}
		return parts[1:], true
	}
	return nil, false
}

// endpointErrors adds the problems endpoint.Spec.Validate found, under path. Name problems are
// reported by Validate itself (with the uniqueness rule), so they are not repeated.
func endpointErrors(errs *Errors, path string, err error) {
	if err == nil {
		return
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		var fe *endpoint.FieldError
		switch {
		case errors.As(e, &fe) && fe.Field == "name":
		case errors.As(e, &fe):
			errs.add(path+"."+fe.Field, "%s", fe.Message)
		default:
			errs.add(path, "%v", e)
		}
	}
}
