package routing

import (
	"fmt"
	"strings"
	"time"

	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/routing/query"
)

// TestInput is a route test (IoT Hub's testnew and testall): a condition, or the configured
// routes, against a sample message.
type TestInput struct {
	// Condition is tested when set ("" means true, as a route's absent condition); nil tests the
	// routes in force.
	Condition *string
	// Source is the route source the message stands for (default DeviceMessages).
	Source  string
	Message *message.Message
	// Twin is the twin conditions see ({"tags": ..., "properties": ...}); nil uses the tags of
	// the device named by the message's connectionDeviceId, if any.
	Twin map[string]any
}

// TestResult is the outcome of a route test.
type TestResult struct {
	// Result is "true", "false" or "undefined" for a tested condition.
	Result string `json:"result,omitempty"`
	// Notes say why parts of the condition are undefined.
	Notes []string `json:"notes,omitempty"`
	// Routes are the configured routes of the source with their results (testing the routes in
	// force).
	Routes []RouteTest `json:"routes,omitempty"`
	// Endpoints are where the router would send the message (testing the routes in force).
	Endpoints []string `json:"endpoints,omitempty"`
	// MatchedRoutes are the routes the router would record for the message.
	MatchedRoutes []string `json:"matchedRoutes,omitempty"`
}

// RouteTest is one configured route's result in a test.
type RouteTest struct {
	Name     string   `json:"name"`
	Endpoint string   `json:"endpoint"`
	Enabled  bool     `json:"enabled"`
	Result   string   `json:"result"`
	Notes    []string `json:"notes,omitempty"`
}

// Test evaluates a condition, or the routes in force, against a sample message. Errors are
// Errors naming the field.
func (r *Router) Test(in TestInput) (TestResult, error) {
	src := SourceDeviceMessages
	if in.Source != "" {
		s, ok := CanonicalSource(in.Source)
		if !ok {
			return TestResult{}, Errors{{Path: "source", Reason: fmt.Sprintf("%q is not a route source: one of %s", in.Source, strings.Join(sources, ", "))}}
		}
		src = s
	}
	m := in.Message
	if m == nil {
		m = &message.Message{}
	}
	if m.Source == "" || SourceOf(m) != src {
		m.Source = messageSourceFor(src)
	}
	var twin query.TwinSource
	if in.Twin != nil {
		twin = query.TwinDocument(in.Twin)
	} else {
		twin = r.twinFor(m)
	}
	input := query.MessageInput(m, twin)
	if in.Condition != nil {
		cond := strings.TrimSpace(*in.Condition)
		if cond == "" {
			return TestResult{Result: "true"}, nil
		}
		q, err := query.Compile(*in.Condition)
		if err != nil {
			return TestResult{}, Errors{{Path: "condition", Reason: err.Error()}}
		}
		x := q.Explain(input)
		return TestResult{Result: x.Result.RouteResult(), Notes: x.Notes}, nil
	}
	t := r.cur.Load()
	var out TestResult
	for _, rt := range t.cfg.Routes {
		if rt.Source != src {
			continue
		}
		res := RouteTest{Name: rt.Name, Endpoint: rt.EndpointNames[0], Enabled: rt.Enabled(), Result: "true"}
		if c := strings.TrimSpace(rt.Condition); c != "" {
			x := query.MustCompile(rt.Condition).Explain(input)
			res.Result, res.Notes = x.Result.RouteResult(), x.Notes
		}
		out.Routes = append(out.Routes, res)
	}
	decision := r.route(t, m, twin)
	if decision == nil {
		decision = &message.Routing{Endpoints: []string{BuiltInEndpoint}}
	}
	out.MatchedRoutes, out.Endpoints = decision.Routes, decision.Endpoints
	if out.Endpoints == nil {
		out.Endpoints = []string{}
	}
	return out, nil
}

// messageSourceFor is the iothub-message-source of messages of a route source.
func messageSourceFor(src string) string {
	switch src {
	case SourceDeviceMessages:
		return message.SourceTelemetry
	case SourceDeviceLifecycleEvents:
		return message.SourceDeviceLifecycleEvents
	case SourceDeviceConnectionStateEvents:
		return message.SourceDeviceConnectionStateEvents
	}
	return strings.ToLower(src[:1]) + src[1:]
}

// SetSystemProperty sets a system property of a sample message by its routing keyword
// (contentType, $contentType, messageId, ...) or its built-in endpoint name (content-type,
// message-id, ...), case-insensitively.
func SetSystemProperty(m *message.Message, name, value string) error {
	key := strings.ToLower(strings.TrimPrefix(name, "$"))
	var f *string
	switch key {
	case "messageid", "message-id":
		f = &m.MessageID
	case "correlationid", "correlation-id":
		f = &m.CorrelationID
	case "userid", "user-id":
		f = &m.UserID
	case "contenttype", "content-type":
		f = &m.ContentType
	case "contentencoding", "content-encoding":
		f = &m.ContentEncoding
	case "connectiondeviceid", "iothub-connection-device-id":
		f = &m.ConnectionDeviceID
	case "connectionmoduleid", "iothub-connection-module-id":
		f = &m.ConnectionModuleID
	case "connectiondevicegenerationid", "iothub-connection-auth-generation-id":
		f = &m.ConnectionAuthGenerationID
	case "connectionauthmethod", "iothub-connection-auth-method":
		f = &m.ConnectionAuthMethod
	case "dt-dataschema":
		f = &m.DataSchema
	case "dt-subject":
		f = &m.ComponentName
	case "iothub-creation-time-utc", "creation-time-utc":
		f = &m.CreationTime
	case "iothub-message-source":
		f = &m.Source
	case "enqueuedtime", "iothub-enqueuedtime":
		t, err := time.Parse(time.RFC3339Nano, value)
		if err != nil {
			return fmt.Errorf("%s: %q is not an RFC 3339 time", name, value)
		}
		m.EnqueuedTime = t.UTC()
		return nil
	default:
		return fmt.Errorf("%q is not a system property (use contentType, contentEncoding, messageId, correlationId, userId, connectionDeviceId, connectionModuleId, connectionDeviceGenerationId, connectionAuthMethod, enqueuedTime, dt-dataschema, dt-subject, iothub-creation-time-utc)", name)
	}
	*f = value
	return nil
}
