package routing

import (
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/routing/query"
)

// TagSource supplies identities' twin tags for $twin.tags in conditions and enrichments.
type TagSource interface {
	// Tags returns the tags of a device (moduleID "") or module; nil when it has none or does
	// not exist. It is called on the ingestion path only when a condition reads $twin, and must
	// be fast (cached).
	Tags(deviceID, moduleID string) map[string]any
}

// Router holds the routing configuration in force and makes the routing decision for each
// message. It is safe for concurrent use; Set swaps the configuration atomically, and a message
// is routed entirely with one configuration.
type Router struct {
	hubName string
	tags    TagSource
	cur     atomic.Pointer[table]
}

// table is a compiled configuration.
type table struct {
	cfg    Config
	limits Limits
	// bySource holds the enabled routes of each source, in configuration order.
	bySource map[string][]compiledRoute
	// builtInOnly: no routes at all and the fallback enabled towards events, the default hub.
	// Device messages then carry no routing decision (message.Routing nil).
	builtInOnly bool
	fallback    string // the fallback's endpoint; "" when it is disabled
	enrich      map[string][]compiledEnrichment
}

type compiledRoute struct {
	name     string
	cond     *query.Query // nil: true
	endpoint string
}

type compiledEnrichment struct {
	key      string
	value    string
	hubName  bool
	twinPath []string // below the twin root; nil for static values
}

// NewRouter returns a router with the default configuration (no routes, fallback to events).
// tags may be nil: $twin references are then undefined.
func NewRouter(hubName string, tags TagSource) *Router {
	r := &Router{hubName: hubName, tags: tags}
	t, err := compile(Config{}, Limits{})
	if err != nil {
		panic(err)
	}
	r.cur.Store(t)
	return r
}

// HubName is the name $iothubname stands for.
func (r *Router) HubName() string { return r.hubName }

// Check validates a configuration without applying it.
func Check(c Config, limits Limits) (Config, error) {
	t, err := compile(c, limits)
	if err != nil {
		return Config{}, err
	}
	return t.cfg, nil
}

// Set validates c and puts it in force. On error the configuration in force is unchanged.
func (r *Router) Set(c Config, limits Limits) error {
	t, err := compile(c, limits)
	if err != nil {
		return err
	}
	r.cur.Store(t)
	return nil
}

// Config returns the configuration in force and its limits.
func (r *Router) Config() (Config, Limits) {
	t := r.cur.Load()
	return t.cfg, t.limits
}

func compile(c Config, limits Limits) (*table, error) {
	c = c.clone()
	if err := c.Validate(limits); err != nil {
		return nil, err
	}
	t := &table{cfg: c, limits: limits.WithDefaults(), bySource: map[string][]compiledRoute{}, enrich: map[string][]compiledEnrichment{}}
	for _, rt := range c.Routes {
		if !rt.Enabled() {
			continue
		}
		cr := compiledRoute{name: rt.Name, endpoint: rt.EndpointNames[0]}
		if cond := strings.TrimSpace(rt.Condition); cond != "" && !strings.EqualFold(cond, "true") {
			cr.cond = query.MustCompile(rt.Condition) // validated
		}
		t.bySource[rt.Source] = append(t.bySource[rt.Source], cr)
	}
	if c.FallbackRoute.Enabled() {
		t.fallback = c.FallbackRoute.Endpoint()
	}
	t.builtInOnly = len(c.Routes) == 0 && t.fallback == BuiltInEndpoint
	for _, e := range c.Enrichments {
		ce := compiledEnrichment{key: e.Key, value: e.Value}
		switch {
		case strings.EqualFold(e.Value, "$iothubname"):
			ce.hubName = true
		case strings.HasPrefix(e.Value, "$"):
			ce.twinPath, _ = twinPath(e.Value)
		}
		for _, ep := range e.EndpointNames {
			t.enrich[ep] = append(t.enrich[ep], ce)
		}
	}
	return t, nil
}

// clone copies the slices a caller could still modify.
func (c Config) clone() Config {
	out := c
	out.Endpoints = append(out.Endpoints[:0:0], c.Endpoints...)
	out.Routes = make([]Route, len(c.Routes))
	for i, r := range c.Routes {
		r.EndpointNames = append([]string(nil), r.EndpointNames...)
		out.Routes[i] = r
	}
	if c.FallbackRoute != nil {
		f := *c.FallbackRoute
		f.EndpointNames = append([]string(nil), f.EndpointNames...)
		out.FallbackRoute = &f
	}
	out.Enrichments = make([]Enrichment, len(c.Enrichments))
	for i, e := range c.Enrichments {
		e.EndpointNames = append([]string(nil), e.EndpointNames...)
		out.Enrichments[i] = e
	}
	return out
}

// SourceOf maps a message's iothub-message-source to its route source.
func SourceOf(m *message.Message) string {
	switch {
	case m.Source == "" || m.Source == message.SourceTelemetry:
		return SourceDeviceMessages
	case strings.EqualFold(m.Source, message.SourceDeviceLifecycleEvents):
		return SourceDeviceLifecycleEvents
	case strings.EqualFold(m.Source, message.SourceDeviceConnectionStateEvents):
		return SourceDeviceConnectionStateEvents
	case strings.EqualFold(m.Source, "twinChangeEvents"):
		return SourceTwinChangeEvents
	case strings.EqualFold(m.Source, "digitalTwinChangeEvents"):
		return SourceDigitalTwinChangeEvents
	case strings.EqualFold(m.Source, "deviceJobLifecycleEvents"):
		return SourceDeviceJobLifecycleEvents
	}
	return SourceDeviceMessages
}

// Route decides where m goes, with the configuration in force: the enabled routes of m's source
// whose condition is true, their endpoints once each, and for device messages that matched
// nothing, the fallback route. It returns nil for device messages of a hub in its default
// configuration (no routes, fallback to events): nil means the built-in endpoint only. A
// decision with no endpoints means no endpoint receives m.
func (r *Router) Route(m *message.Message) *message.Routing {
	t := r.cur.Load()
	if t.builtInOnly && SourceOf(m) == SourceDeviceMessages {
		return nil
	}
	return r.route(t, m, r.twinFor(m))
}

func (r *Router) route(t *table, m *message.Message, twin query.TwinSource) *message.Routing {
	src := SourceOf(m)
	if src == SourceDeviceMessages && t.builtInOnly {
		return nil
	}
	out := &message.Routing{}
	routes := t.bySource[src]
	if len(routes) > 0 {
		in := query.MessageInput(m, twin)
		for _, cr := range routes {
			if cr.cond != nil && !cr.cond.Matches(in) {
				continue
			}
			out.Routes = append(out.Routes, cr.name)
			if !contains(out.Endpoints, cr.endpoint) {
				out.Endpoints = append(out.Endpoints, cr.endpoint)
			}
		}
	}
	if len(out.Routes) == 0 && src == SourceDeviceMessages && t.fallback != "" {
		out.Routes = []string{FallbackRouteName}
		out.Endpoints = []string{t.fallback}
	}
	return out
}

// Wants reports whether any enabled route takes messages of source: hub events are built only
// when something would receive them.
func (r *Router) Wants(source string) bool {
	return len(r.cur.Load().bySource[source]) > 0
}

// Enrich adds the enrichments configured for endpointName to m's application properties
// (spec 10), replacing a property of the same name (case-insensitively). The dispatcher calls it
// for each message it delivers, and the built-in endpoint's reader for "events". A twin path
// that does not resolve is stamped as its literal text, as IoT Hub does; $twin.properties always
// is, since Tether has no desired or reported properties.
func (r *Router) Enrich(endpointName string, m *message.Message) {
	es := r.cur.Load().enrich[endpointName]
	if len(es) == 0 {
		return
	}
	var twin query.TwinSource
	for _, e := range es {
		v := e.value
		switch {
		case e.hubName:
			v = r.hubName
		case e.twinPath != nil:
			if twin == nil {
				if twin = r.twinFor(m); twin == nil {
					break
				}
			}
			if x, ok := twin.Twin(e.twinPath); ok && x != nil {
				v = stringify(x)
			}
		}
		m.SetProperty(e.key, v)
	}
}

// HasEnrichments reports whether any enrichment applies to endpointName.
func (r *Router) HasEnrichments(endpointName string) bool {
	return len(r.cur.Load().enrich[endpointName]) > 0
}

func stringify(x any) string {
	if s, ok := x.(string); ok {
		return s
	}
	b, err := json.Marshal(x)
	if err != nil {
		return ""
	}
	return string(b)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// twinFor returns the twin a message's conditions and enrichments see: the tags of the identity
// that sent it (the module's for module messages, spec 9.2), looked up on first use.
func (r *Router) twinFor(m *message.Message) query.TwinSource {
	if r.tags == nil || m.ConnectionDeviceID == "" {
		return nil
	}
	return &lazyTwin{src: r.tags, device: m.ConnectionDeviceID, module: m.ConnectionModuleID}
}

type lazyTwin struct {
	src            TagSource
	device, module string
	once           sync.Once
	doc            query.TwinSource
}

func (l *lazyTwin) Twin(path []string) (any, bool) {
	l.once.Do(func() {
		if tags := l.src.Tags(l.device, l.module); tags != nil {
			l.doc = query.TwinDocument(map[string]any{"tags": tags})
		}
	})
	if l.doc == nil {
		return nil, false
	}
	return l.doc.Twin(path)
}
