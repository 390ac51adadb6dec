package routing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tetherhub/tether/internal/routing/endpoint"
)

// Document is a routing configuration as written: in the configuration file's `routing:`
// section, in routing.json, or in a PUT /configuration/routing body. Limits may only come from
// the configuration file.
type Document struct {
	Config Config
	Limits *Limits
}

// FileKey is the key of the routing section in the hub's YAML configuration file.
const FileKey = "routing"

// ParseFile reads the routing section of the hub's YAML configuration file (the file of
// `tether serve --config`, whose other keys are flags). present is false when the file has no
// routing section.
func ParseFile(data []byte) (doc Document, present bool, err error) {
	var top map[string]any
	if err := yaml.Unmarshal(data, &top); err != nil {
		return Document{}, false, fmt.Errorf("parse configuration file: %w", err)
	}
	section, ok := top[FileKey]
	if !ok || section == nil {
		return Document{}, false, nil
	}
	doc, err = decodeDocument(section, FileKey+".")
	return doc, true, err
}

// ParseYAML reads a routing configuration written in YAML (JSON is YAML too): either the
// section itself or a whole configuration file with a `routing:` key.
func ParseYAML(data []byte) (Document, error) {
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return Document{}, fmt.Errorf("parse routing configuration: %w", err)
	}
	if m, ok := tree.(map[string]any); ok {
		if section, ok := m[FileKey]; ok && len(m) == 1 {
			tree = section
		}
	}
	return decodeDocument(tree, "")
}

// ParseJSON reads a routing configuration in JSON, as the service API receives it.
func ParseJSON(data []byte) (Document, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return Document{}, fmt.Errorf("the body is not JSON: %w", err)
	}
	if dec.More() {
		return Document{}, errors.New("the body holds more than one JSON value")
	}
	return decodeDocument(tree, "")
}

// decodeDocument turns a decoded YAML or JSON tree into a Document, reporting every field that
// is unknown or of the wrong type with its path (prefix + path).
func decodeDocument(tree any, prefix string) (Document, error) {
	d := &decoder{prefix: prefix}
	var doc Document
	if tree == nil {
		return doc, nil
	}
	top, ok := d.object(tree, "", "endpoints", "routes", "fallbackRoute", "enrichments", "limits", "source")
	if !ok {
		return doc, d.errs.err()
	}
	for i, v := range d.list(top["endpoints"], "endpoints") {
		doc.Config.Endpoints = append(doc.Config.Endpoints, d.endpoint(v, fmt.Sprintf("endpoints[%d]", i)))
	}
	for i, v := range d.list(top["routes"], "routes") {
		path := fmt.Sprintf("routes[%d]", i)
		m, ok := d.object(v, path, "name", "source", "condition", "endpointNames", "isEnabled")
		if !ok {
			continue
		}
		doc.Config.Routes = append(doc.Config.Routes, Route{
			Name:          d.str(m, "name", path),
			Source:        d.str(m, "source", path),
			Condition:     d.str(m, "condition", path),
			EndpointNames: d.strs(m, "endpointNames", path),
			IsEnabled:     d.boolp(m, "isEnabled", path),
		})
	}
	if v, ok := top["fallbackRoute"]; ok && v != nil {
		if m, ok := d.object(v, "fallbackRoute", "name", "source", "condition", "endpointNames", "isEnabled"); ok {
			doc.Config.FallbackRoute = &FallbackRoute{
				Name:          d.str(m, "name", "fallbackRoute"),
				Source:        d.str(m, "source", "fallbackRoute"),
				Condition:     d.str(m, "condition", "fallbackRoute"),
				EndpointNames: d.strs(m, "endpointNames", "fallbackRoute"),
				IsEnabled:     d.boolp(m, "isEnabled", "fallbackRoute"),
			}
		}
	}
	for i, v := range d.list(top["enrichments"], "enrichments") {
		path := fmt.Sprintf("enrichments[%d]", i)
		m, ok := d.object(v, path, "key", "value", "endpointNames")
		if !ok {
			continue
		}
		doc.Config.Enrichments = append(doc.Config.Enrichments, Enrichment{
			Key:           d.str(m, "key", path),
			Value:         d.str(m, "value", path),
			EndpointNames: d.strs(m, "endpointNames", path),
		})
	}
	if v, ok := top["limits"]; ok && v != nil {
		if m, ok := d.object(v, "limits", "routes", "endpoints", "enrichments"); ok {
			doc.Limits = &Limits{
				Routes:      d.count(m, "routes", "limits"),
				Endpoints:   d.count(m, "endpoints", "limits"),
				Enrichments: d.count(m, "enrichments", "limits"),
			}
		}
	}
	return doc, d.errs.err()
}

type decoder struct {
	prefix string
	errs   Errors
}

func (d *decoder) add(path, format string, args ...any) {
	d.errs.add(d.prefix+path, format, args...)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// object checks that v is a mapping whose keys are all known.
func (d *decoder) object(v any, path string, known ...string) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		if path == "" {
			where := strings.TrimSuffix(d.prefix, ".")
			if where == "" {
				where = "(top level)"
			}
			d.errs.add(where, "expected a mapping of %s, found %s", strings.Join(known, ", "), kindOf(v))
			return nil, false
		}
		d.add(path, "expected a mapping, found %s", kindOf(v))
		return nil, false
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		found := false
		for _, kn := range known {
			if k == kn {
				found = true
				break
			}
		}
		if found {
			continue
		}
		hint := ""
		for _, kn := range known {
			if strings.EqualFold(k, kn) {
				hint = fmt.Sprintf(" (did you mean %q? keys are case-sensitive)", kn)
			}
		}
		if hint == "" {
			hint = " (known: " + strings.Join(known, ", ") + ")"
		}
		d.add(join(path, k), "unknown field%s", hint)
	}
	return m, true
}

func (d *decoder) list(v any, path string) []any {
	if v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		d.add(path, "expected a list, found %s", kindOf(v))
		return nil
	}
	return l
}

func (d *decoder) str(m map[string]any, key, path string) string {
	v, ok := m[key]
	if !ok || v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		d.add(join(path, key), "expected a string, found %s (quote it)", kindOf(v))
	}
	return s
}

func (d *decoder) strs(m map[string]any, key, path string) []string {
	v, ok := m[key]
	if !ok || v == nil {
		return nil
	}
	if s, ok := v.(string); ok { // a single name is accepted for a one-element list
		return []string{s}
	}
	l, ok := v.([]any)
	if !ok {
		d.add(join(path, key), "expected a list of names, found %s", kindOf(v))
		return nil
	}
	out := make([]string, 0, len(l))
	for i, x := range l {
		s, ok := x.(string)
		if !ok {
			d.add(fmt.Sprintf("%s[%d]", join(path, key), i), "expected a string, found %s", kindOf(x))
			continue
		}
		out = append(out, s)
	}
	return out
}

func (d *decoder) boolp(m map[string]any, key, path string) *bool {
	v, ok := m[key]
	if !ok || v == nil {
		return nil
	}
	b, ok := v.(bool)
	if !ok {
		d.add(join(path, key), "expected true or false, found %s", kindOf(v))
		return nil
	}
	return &b
}

func (d *decoder) count(m map[string]any, key, path string) int {
	v, ok := m[key]
	if !ok || v == nil {
		return 0
	}
	var f float64
	switch n := v.(type) {
	case int:
		f = float64(n)
	case int64:
		f = float64(n)
	case uint64:
		f = float64(n)
	case float64:
		f = n
	case json.Number:
		var err error
		if f, err = n.Float64(); err != nil {
			d.add(join(path, key), "%q is not a number", n)
			return 0
		}
	default:
		d.add(join(path, key), "expected a positive whole number, found %s", kindOf(v))
		return 0
	}
	if f < 1 || f != math.Trunc(f) || f > 1e6 {
		d.add(join(path, key), "%v is not a whole number from 1 to 1000000", f)
		return 0
	}
	return int(f)
}

// endpoint decodes one endpoint spec strictly through its JSON form: the spec belongs to
// package routing/endpoint, which defines its fields.
func (d *decoder) endpoint(v any, path string) endpoint.Spec {
	var spec endpoint.Spec
	if _, ok := v.(map[string]any); !ok {
		d.add(path, "expected a mapping, found %s", kindOf(v))
		return spec
	}
	data, err := json.Marshal(v)
	if err != nil {
		d.add(path, "%v", err)
		return spec
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			d.add(join(path, te.Field), "expected %s, found a %s", te.Type, te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			d.add(path, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			d.add(path, "%s", strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	return spec
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a Boolean"
	case int, int64, uint64, float64, json.Number:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}
