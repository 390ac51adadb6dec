package api

import (
	"encoding/json"
	"time"
)

// RoutingConfig is the hub's routing configuration as GET /configuration/routing returns it
// and PUT accepts it: IoT Hub's routing properties (routes, fallbackRoute, enrichments) with
// Tether's custom endpoint specs. Limits and Source are read-only.
type RoutingConfig struct {
	// Endpoints are custom endpoint specs ({"name", "type", "<type>": {...}}), kept generic here.
	Endpoints     []map[string]any `json:"endpoints,omitempty"`
	Routes        []Route          `json:"routes"`
	FallbackRoute *FallbackRoute   `json:"fallbackRoute,omitempty"`
	Enrichments   []Enrichment     `json:"enrichments"`
	// Limits are set by the operator in the configuration file.
	Limits *RoutingLimits `json:"limits,omitempty"`
	// Source is where the configuration in force comes from: default, file or api.
	Source string `json:"source,omitempty"`
}

// Route is one route (ARM RouteProperties).
type Route struct {
	Name          string   `json:"name"`
	Source        string   `json:"source"`
	Condition     string   `json:"condition,omitempty"`
	EndpointNames []string `json:"endpointNames"`
	IsEnabled     *bool    `json:"isEnabled,omitempty"`
}

// FallbackRoute is the fallback route.
type FallbackRoute struct {
	Name          string   `json:"name,omitempty"`
	Source        string   `json:"source,omitempty"`
	Condition     string   `json:"condition,omitempty"`
	EndpointNames []string `json:"endpointNames,omitempty"`
	IsEnabled     *bool    `json:"isEnabled,omitempty"`
}

// Enrichment is a message enrichment.
type Enrichment struct {
	Key           string   `json:"key"`
	Value         string   `json:"value"`
	EndpointNames []string `json:"endpointNames"`
}

// RoutingLimits bound the configuration.
type RoutingLimits struct {
	Routes      int `json:"routes"`
	Endpoints   int `json:"endpoints"`
	Enrichments int `json:"enrichments"`
}

// RouteTestRequest is the body of POST /routing/test. With Condition, the condition is tested
// (IoT Hub's testnew); without it, the routes in force are (testall).
type RouteTestRequest struct {
	Condition *string `json:"condition,omitempty"`
	// Source is the route source the message stands for (default DeviceMessages).
	Source  string           `json:"source,omitempty"`
	Message RouteTestMessage `json:"message"`
	// Twin is the twin conditions see ({"tags": {...}}); absent: the tags of the device named in
	// systemProperties.connectionDeviceId, if it exists.
	Twin map[string]any `json:"twin,omitempty"`
}

// RouteTestMessage is a sample message.
type RouteTestMessage struct {
	// Body is a string, or any JSON value, which stands for its JSON text.
	Body json.RawMessage `json:"body,omitempty"`
	// BodyBase64 is a binary body instead of Body.
	BodyBase64 string `json:"bodyBase64,omitempty"`
	// AppProperties are the application properties.
	AppProperties map[string]string `json:"appProperties,omitempty"`
	// SystemProperties are named by routing keyword (contentType, contentEncoding, messageId,
	// connectionDeviceId, ...) or built-in endpoint name (content-type, ...).
	SystemProperties map[string]string `json:"systemProperties,omitempty"`
}

// RouteTestResult is the answer of POST /routing/test.
type RouteTestResult struct {
	// Result is "true", "false" or "undefined" when a condition was tested.
	Result string   `json:"result,omitempty"`
	Notes  []string `json:"notes,omitempty"`
	// Routes, MatchedRoutes and Endpoints answer a test of the routes in force.
	Routes        []RouteTestRoute `json:"routes,omitempty"`
	MatchedRoutes []string         `json:"matchedRoutes,omitempty"`
	Endpoints     []string         `json:"endpoints,omitempty"`
}

// RouteTestRoute is one configured route's result.
type RouteTestRoute struct {
	Name     string   `json:"name"`
	Endpoint string   `json:"endpoint"`
	Enabled  bool     `json:"enabled"`
	Result   string   `json:"result"`
	Notes    []string `json:"notes,omitempty"`
}

// EndpointHealth is a custom endpoint's delivery health, with IoT Hub's states (unknown,
// healthy, degraded, unhealthy, dead), as GET /routing/endpoints returns it.
type EndpointHealth struct {
	Name          string    `json:"name"`
	Type          string    `json:"type"`
	State         string    `json:"state"`
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	LastSuccess   time.Time `json:"lastSuccess,omitzero"`
	// Lag is how many log records the endpoint's cursors are behind, over all partitions.
	Lag       int64 `json:"lag"`
	Delivered int64 `json:"delivered"`
	Lost      int64 `json:"lost"`
	Dropped   int64 `json:"dropped"`
}
