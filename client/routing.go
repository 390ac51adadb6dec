package client

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/tetherhub/tether/api"
)

// Routing returns the routing configuration in force and its etag. It needs a policy with
// RegistryWrite and ServiceConnect (iothubowner): the configuration holds endpoint credentials.
func (c *Client) Routing(ctx context.Context) (api.RoutingConfig, string, error) {
	var out api.RoutingConfig
	resp, err := c.do(ctx, http.MethodGet, "/configuration/routing", nil, nil, nil, &out)
	if err != nil {
		return out, "", err
	}
	return out, strings.Trim(resp.Header.Get("ETag"), `"`), nil
}

// SetRouting replaces the routing configuration with config, a JSON document (what
// api.RoutingConfig marshals to, or the same written by hand); etag "" replaces whatever is in
// force. The hub validates it strictly and answers with the configuration now in force.
func (c *Client) SetRouting(ctx context.Context, config json.RawMessage, etag string) (api.RoutingConfig, error) {
	var headers map[string]string
	if etag != "" {
		headers = map[string]string{"If-Match": quote(etag)}
	}
	var out api.RoutingConfig
	_, err := c.do(ctx, http.MethodPut, "/configuration/routing", nil, headers, config, &out)
	return out, err
}

// ResetRouting drops the configuration set through the API: the hub's configuration file's
// routing section (or the default) is in force again.
func (c *Client) ResetRouting(ctx context.Context) (api.RoutingConfig, error) {
	var out api.RoutingConfig
	_, err := c.do(ctx, http.MethodDelete, "/configuration/routing", nil, nil, nil, &out)
	return out, err
}

// TestRoute tests a condition, or the routes in force, against a sample message.
func (c *Client) TestRoute(ctx context.Context, req api.RouteTestRequest) (api.RouteTestResult, error) {
	var out api.RouteTestResult
	_, err := c.do(ctx, http.MethodPost, "/routing/test", nil, nil, req, &out)
	return out, err
}

// EndpointHealth reports each custom endpoint's delivery health.
func (c *Client) EndpointHealth(ctx context.Context) ([]api.EndpointHealth, error) {
	var out []api.EndpointHealth
	_, err := c.do(ctx, http.MethodGet, "/routing/endpoints", nil, nil, nil, &out)
	return out, err
}
