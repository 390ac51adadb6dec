package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"

	"github.com/tetherhub/tether/api"
)

// RouteCmd manages message routing (routes, fallback route, custom endpoints, enrichments).
type RouteCmd struct {
	List   RouteListCmd   `cmd:"" help:"Show the routing configuration in force."`
	Set    RouteSetCmd    `cmd:"" help:"Replace the routing configuration with a YAML or JSON file (kept by the hub; it takes precedence over the configuration file's routing section)."`
	Reset  RouteResetCmd  `cmd:"" help:"Drop the configuration set with 'route set': the hub's configuration file's routing section (or the default) is in force again."`
	Test   RouteTestCmd   `cmd:"" help:"Test a condition, or the routes in force, against a sample message."`
	Health RouteHealthCmd `cmd:"" help:"Show each custom endpoint's delivery health (IoT Hub's states) and how far behind it is."`
}

// RouteHealthCmd prints custom endpoint health.
type RouteHealthCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

// Run prints the health of every custom endpoint.
func (h *RouteHealthCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	health, err := t.client.EndpointHealth(env.ctx)
	if err != nil {
		return err
	}
	if h.JSON {
		return printJSON(env, health)
	}
	if len(health) == 0 {
		fmt.Fprintln(env.Stdout, "No custom endpoints.")
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tTYPE\tSTATE\tLAG\tDELIVERED\tLOST\tLAST ERROR")
	for _, e := range health {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", e.Name, e.Type, e.State, e.Lag, e.Delivered, e.Lost, e.LastError)
	}
	return tw.Flush()
}

// RouteListCmd prints the configuration in force.
type RouteListCmd struct {
	JSON bool `name:"json" help:"Print the configuration as JSON (the form 'route set' accepts)."`
}

// Run prints the routing configuration.
func (l *RouteListCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	cfg, etag, err := t.client.Routing(env.ctx)
	if err != nil {
		return err
	}
	if l.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(cfg)
	}
	return printRouting(env.Stdout, cfg, etag)
}

func printRouting(w io.Writer, cfg api.RoutingConfig, etag string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Routing configuration from %s (etag %s)\n\n", describeSource(cfg.Source), etag)
	if len(cfg.Routes) == 0 {
		b.WriteString("No routes.\n")
	} else {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROUTE\tSOURCE\tENDPOINT\tENABLED\tCONDITION")
		for _, r := range cfg.Routes {
			cond := r.Condition
			if strings.TrimSpace(cond) == "" {
				cond = "true"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", r.Name, r.Source, strings.Join(r.EndpointNames, ","), r.IsEnabled == nil || *r.IsEnabled, cond)
		}
		tw.Flush()
	}
	fb := cfg.FallbackRoute
	switch {
	case fb != nil && fb.IsEnabled != nil && !*fb.IsEnabled:
		b.WriteString("\nFallback route: disabled (device messages no route matches go nowhere)\n")
	default:
		ep := "events"
		if fb != nil && len(fb.EndpointNames) > 0 {
			ep = fb.EndpointNames[0]
		}
		fmt.Fprintf(&b, "\nFallback route: enabled, device messages no route matches go to %s\n", ep)
	}
	if len(cfg.Endpoints) > 0 {
		b.WriteString("\nCustom endpoints:\n")
		for _, e := range cfg.Endpoints {
			fmt.Fprintf(&b, "  %v (%v)\n", e["name"], e["type"])
		}
	}
	if len(cfg.Enrichments) > 0 {
		b.WriteString("\nEnrichments:\n")
		for _, e := range cfg.Enrichments {
			fmt.Fprintf(&b, "  %s = %s  -> %s\n", e.Key, e.Value, strings.Join(e.EndpointNames, ", "))
		}
	}
	if l := cfg.Limits; l != nil {
		fmt.Fprintf(&b, "\nLimits: %d routes, %d custom endpoints, %d enrichments\n", l.Routes, l.Endpoints, l.Enrichments)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func describeSource(s string) string {
	switch s {
	case "api":
		return "the service API ('tether route set'; 'tether route reset' returns to the configuration file)"
	case "file":
		return "the configuration file's routing section"
	}
	return "the defaults (no routes; everything goes to the built-in endpoint)"
}

// RouteSetCmd replaces the configuration.
type RouteSetCmd struct {
	File string `name:"file" short:"f" required:"" type:"existingfile" help:"YAML or JSON file: the routing section itself, or a configuration file with a routing: key."`
	If   string `name:"if-match" help:"Only replace the configuration whose etag this is (see 'route list')."`
}

// Run sends the file to the hub, which validates it.
func (s *RouteSetCmd) Run(env *Env, c *CLI) error {
	data, err := os.ReadFile(s.File)
	if err != nil {
		return err
	}
	body, err := routingJSON(data)
	if err != nil {
		return fmt.Errorf("%s: %w", s.File, err)
	}
	t, err := c.connect()
	if err != nil {
		return err
	}
	cfg, err := t.client.SetRouting(env.ctx, body, s.If)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "Routing configuration set: %d routes, %d custom endpoints, %d enrichments.\n", len(cfg.Routes), len(cfg.Endpoints), len(cfg.Enrichments))
	return nil
}

// routingJSON turns a YAML (or JSON) routing file into the JSON the API takes. A file with a
// top-level routing: key (the hub's configuration file) contributes that section.
func routingJSON(data []byte) (json.RawMessage, error) {
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return nil, err
	}
	if m, ok := tree.(map[string]any); ok {
		if section, ok := m["routing"]; ok {
			tree = section
		}
	}
	if tree == nil {
		tree = map[string]any{}
	}
	out, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("only string keys are allowed: %w", err)
	}
	return out, nil
}

// RouteResetCmd drops the API's configuration.
type RouteResetCmd struct{}

// Run resets.
func (RouteResetCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	cfg, err := t.client.ResetRouting(env.ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "Routing configuration from %s is in force.\n", describeSource(cfg.Source))
	return nil
}

// RouteTestCmd tests a condition or the routes in force.
type RouteTestCmd struct {
	Condition *string `name:"condition" help:"Routing query to test (omit to test the routes in force)."`
	Message   string  `name:"message" type:"existingfile" help:"JSON file with the sample message: {\"body\": ..., \"appProperties\": {...}, \"systemProperties\": {\"contentType\": \"application/json\", \"contentEncoding\": \"utf-8\", ...}}."`
	Twin      string  `name:"twin" type:"existingfile" help:"JSON file with the twin the condition sees ({\"tags\": {...}}); default: the tags of the device in systemProperties.connectionDeviceId."`
	Source    string  `name:"source" help:"Route source the message stands for (default DeviceMessages)."`
	JSON      bool    `name:"json" help:"Print the hub's answer as JSON."`
}

// Run asks the hub.
func (r *RouteTestCmd) Run(env *Env, c *CLI) error {
	req := api.RouteTestRequest{Condition: r.Condition, Source: r.Source}
	if r.Message != "" {
		if err := readJSONFile(r.Message, &req.Message); err != nil {
			return err
		}
	}
	if r.Twin != "" {
		if err := readJSONFile(r.Twin, &req.Twin); err != nil {
			return err
		}
	}
	t, err := c.connect()
	if err != nil {
		return err
	}
	res, err := t.client.TestRoute(env.ctx, req)
	if err != nil {
		return err
	}
	if r.JSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	var b strings.Builder
	if r.Condition != nil {
		fmt.Fprintln(&b, res.Result)
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	} else {
		if len(res.Routes) == 0 {
			fmt.Fprintln(&b, "No routes for this source.")
		}
		for _, rt := range res.Routes {
			state := ""
			if !rt.Enabled {
				state = " (disabled)"
			}
			fmt.Fprintf(&b, "%s -> %s: %s%s\n", rt.Name, rt.Endpoint, rt.Result, state)
			for _, n := range rt.Notes {
				fmt.Fprintf(&b, "  - %s\n", n)
			}
		}
		if len(res.Endpoints) == 0 {
			fmt.Fprintln(&b, "endpoints: none (the message would go nowhere)")
		} else {
			fmt.Fprintf(&b, "endpoints: %s (matched routes: %s)\n", strings.Join(res.Endpoints, ", "), strings.Join(orNone(res.MatchedRoutes), ", "))
		}
	}
	_, err = io.WriteString(env.Stdout, b.String())
	return err
}

func orNone(s []string) []string {
	if len(s) == 0 {
		return []string{"none; the hub has no routes"}
	}
	return s
}

func readJSONFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("%s: not JSON at byte %d: %w", path, se.Offset, err)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
