package hub_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/message"
)

type routerFunc func(*message.Message) *message.Routing

func (f routerFunc) Route(m *message.Message) *message.Routing { return f(m) }

func TestSubmitStoresTheRoutingDecision(t *testing.T) {
	var changes []string
	f := newFixture(t, hub.Config{Router: routerFunc(func(m *message.Message) *message.Routing {
		switch {
		case m.Source != message.SourceTelemetry:
			return &message.Routing{} // hub events: nowhere
		case m.Properties["to"] == "nowhere":
			return &message.Routing{}
		}
		return &message.Routing{Routes: []string{"r"}, Endpoints: []string{"hook"}}
	}), OnConnectionChange: func(device, module string, connected bool) {
		changes = append(changes, device+map[bool]string{true: " up", false: " down"}[connected])
	}})
	id := f.identity(t)
	ctx := context.Background()
	for _, to := range []string{"hook", "nowhere"} {
		p, err := f.hub.Submit(ctx, hub.Origin{Identity: id}, &message.Message{Properties: map[string]string{"to": to}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.hub.Publish(ctx, &message.Message{ConnectionDeviceID: "dev1", Source: message.SourceDeviceLifecycleEvents}); err != nil {
		t.Fatal(err)
	}
	stored := f.Stored(t)
	if len(stored) != 2 {
		t.Fatalf("stored %d messages, want the two device messages (a hub event for no endpoint is not stored)", len(stored))
	}
	if !reflect.DeepEqual(stored[0].Routing, &message.Routing{Routes: []string{"r"}, Endpoints: []string{"hook"}}) || stored[0].ToEndpoint("events") {
		t.Errorf("first decision = %+v", stored[0].Routing)
	}
	if stored[1].Routing == nil || len(stored[1].Routing.Endpoints) != 0 {
		t.Errorf("a device message routed nowhere is stored with an empty decision, got %+v", stored[1].Routing)
	}

	f.hub.Connected(ctx, id)
	f.hub.Connected(ctx, id) // takeover
	f.hub.Disconnected(ctx, id)
	f.hub.Disconnected(ctx, id)
	if !reflect.DeepEqual(changes, []string{"dev1 up", "dev1 down"}) {
		t.Fatalf("connection changes = %v, want one up and one down across a takeover", changes)
	}
}
