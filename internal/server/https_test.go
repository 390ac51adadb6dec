package server

import "testing"

func TestIsWebSocketPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/$iothub/websocket":          true,
		"/:18883/$iothub/websocket":   true, // GatewayHostName=localhost:18883
		"/:/$iothub/websocket":        false,
		"/:abc/$iothub/websocket":     false,
		"/:123456/$iothub/websocket":  false,
		"/x/$iothub/websocket":        false,
		"/$iothub/websocket/":         false,
		"/$iothub/websocketx":         false,
		"/devices/d1/messages/events": false,
	} {
		if got := isWebSocketPath(p); got != want {
			t.Errorf("isWebSocketPath(%q) = %v, want %v", p, got, want)
		}
	}
}
