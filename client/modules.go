package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/tetherhub/tether/api"
)

func modulePath(deviceID, moduleID string) string {
	return devicePath(deviceID) + "/modules/" + url.PathEscape(moduleID)
}

// CreateModule creates a module identity on an existing device; empty keys are generated.
func (c *Client) CreateModule(ctx context.Context, m api.Module) (api.Module, error) {
	var out api.Module
	_, err := c.do(ctx, http.MethodPut, modulePath(m.DeviceID, m.ModuleID), nil, nil, m, &out)
	return out, err
}

// UpdateModule replaces a module identity if its etag still matches ("*" or "" = always).
func (c *Client) UpdateModule(ctx context.Context, m api.Module, etag string) (api.Module, error) {
	if etag == "" {
		etag = "*"
	}
	var out api.Module
	_, err := c.do(ctx, http.MethodPut, modulePath(m.DeviceID, m.ModuleID), nil, map[string]string{"If-Match": quote(etag)}, m, &out)
	return out, err
}

// GetModule returns a module identity.
func (c *Client) GetModule(ctx context.Context, deviceID, moduleID string) (api.Module, error) {
	var out api.Module
	_, err := c.do(ctx, http.MethodGet, modulePath(deviceID, moduleID), nil, nil, nil, &out)
	return out, err
}

// ListModules returns a device's module identities.
func (c *Client) ListModules(ctx context.Context, deviceID string) ([]api.Module, error) {
	var out []api.Module
	_, err := c.do(ctx, http.MethodGet, devicePath(deviceID)+"/modules", nil, nil, nil, &out)
	return out, err
}

// DeleteModule deletes a module identity if its etag still matches ("*" or "" = always).
func (c *Client) DeleteModule(ctx context.Context, deviceID, moduleID, etag string) error {
	if etag == "" {
		etag = "*"
	}
	resp, err := c.do(ctx, http.MethodDelete, modulePath(deviceID, moduleID), nil, map[string]string{"If-Match": quote(etag)}, nil, nil)
	if err == nil {
		resp.Body.Close()
	}
	return err
}
