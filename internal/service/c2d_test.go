package service_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/c2d"
	"github.com/tetherhub/tether/internal/hubtest"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/service"
	"github.com/tetherhub/tether/internal/telemetry"
)

// newC2DFixture is a service API with a real C2D store whose devices are the registry's.
func newC2DFixture(t *testing.T, set c2d.Settings) (*fixture, *c2d.Store) {
	t.Helper()
	f := &fixture{Storage: hubtest.New(t, telemetry.Options{Partitions: 1})}
	reg := f.Registry
	store, err := c2d.Open(f.DB, c2d.Options{Settings: set, HubName: "hub", SweepInterval: -1,
		DeviceExists: func(ctx context.Context, id string) (string, bool, error) {
			d, err := reg.GetDevice(ctx, id)
			if errors.Is(err, registry.ErrDeviceNotFound) {
				return "", false, nil
			}
			return d.GenerationID, err == nil, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f.serve(t, service.Config{C2D: store,
		CloudToDeviceMessageCount: func(_ context.Context, deviceID, moduleID string) (int, error) {
			if moduleID != "" {
				return 0, nil
			}
			return store.PendingCount(deviceID), nil
		}})
	return f, store
}

func wantAPIError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.StatusCode != status || e.Code != code {
		t.Fatalf("got %v, want %d %s", err, status, code)
	}
}

func TestC2DSendThroughClient(t *testing.T) {
	f, store := newC2DFixture(t, c2d.Settings{MaxQueueDepth: 3})
	ctx := context.Background()
	svc := f.client(t, "service")
	if _, err := f.client(t, "registryReadWrite").CreateDevice(ctx, api.Device{DeviceID: "dev"}); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(10 * time.Minute).UTC().Truncate(time.Millisecond)
	res, err := svc.SendC2D(ctx, "dev", api.C2DMessage{MessageID: "m1", CorrelationID: "c1", UserID: "u1", ContentType: "application/json",
		ContentEncoding: "utf-8", ExpiryTime: &exp, Ack: "full", Properties: map[string]string{"Color": "blue"}, Body: `{"a":1}`})
	if err != nil {
		t.Fatal(err)
	}
	if res.DeviceID != "dev" || res.MessageID != "m1" || res.SequenceNumber != 1 || !res.ExpiryTime.Equal(exp) || res.EnqueuedTime.IsZero() {
		t.Fatalf("send result %+v", res)
	}
	m, ok, err := store.Receive(ctx, "dev")
	if err != nil || !ok {
		t.Fatalf("receive: %v %v", ok, err)
	}
	if m.MessageID != "m1" || m.CorrelationID != "c1" || m.UserID != "u1" || m.ContentType != "application/json" || m.ContentEncoding != "utf-8" ||
		m.Ack != c2d.AckFull || m.Properties["Color"] != "blue" || string(m.Body) != `{"a":1}` || !m.ExpiryTime.Equal(exp) {
		t.Fatalf("stored %+v", m)
	}
	if _, err := svc.SendC2D(ctx, "dev", api.C2DMessage{BodyBase64: "AAEC/w=="}); err != nil {
		t.Fatal(err)
	}
	if d, err := svc.GetDevice(ctx, "dev"); err == nil {
		t.Fatalf("service policy read the registry: %+v", d)
	}
	if d, err := f.client(t, "registryRead").GetDevice(ctx, "dev"); err != nil || d.CloudToDeviceMessageCount != 2 {
		t.Fatalf("cloudToDeviceMessageCount: %+v %v", d, err)
	}

	// Errors as IoT Hub gives them.
	_, err = svc.SendC2D(ctx, "nobody", api.C2DMessage{Body: "x"})
	wantAPIError(t, err, http.StatusNotFound, "DeviceNotFound")
	_, err = svc.SendC2D(ctx, "dev", api.C2DMessage{Body: strings.Repeat("x", 64*1024+1)})
	wantAPIError(t, err, http.StatusRequestEntityTooLarge, "MessageTooLarge")
	_, err = svc.SendC2D(ctx, "dev", api.C2DMessage{Properties: map[string]string{"bad name": "v"}})
	wantAPIError(t, err, http.StatusBadRequest, "ArgumentInvalid")
	_, err = svc.SendC2D(ctx, "dev", api.C2DMessage{Ack: "sometimes"})
	wantAPIError(t, err, http.StatusBadRequest, "ArgumentInvalid")
	_, err = svc.SendC2D(ctx, "dev", api.C2DMessage{Body: "x", BodyBase64: "eA=="})
	wantAPIError(t, err, http.StatusBadRequest, "ArgumentInvalid")
	if _, err := svc.SendC2D(ctx, "dev", api.C2DMessage{}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.SendC2D(ctx, "dev", api.C2DMessage{Body: "fourth"})
	wantAPIError(t, err, http.StatusForbidden, "DeviceMaximumQueueDepthExceeded")

	// Sending needs ServiceConnect.
	_, err = f.client(t, "registryReadWrite").SendC2D(ctx, "dev", api.C2DMessage{})
	wantAPIError(t, err, http.StatusUnauthorized, "IotHubUnauthorizedAccess")
	_, err = f.client(t, "registryReadWrite").PurgeC2D(ctx, "dev")
	wantAPIError(t, err, http.StatusUnauthorized, "IotHubUnauthorizedAccess")
}

func TestC2DPurgeAndFeedbackThroughClient(t *testing.T) {
	f, store := newC2DFixture(t, c2d.Settings{FeedbackBatchInterval: 10 * time.Millisecond})
	ctx := context.Background()
	svc := f.client(t, "service")
	dev, err := f.client(t, "registryReadWrite").CreateDevice(ctx, api.Device{DeviceID: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing yet: 204 at once, and after a short wait.
	if fb, err := svc.ReceiveFeedback(ctx, 0); err != nil || fb != nil {
		t.Fatalf("empty feedback: %+v %v", fb, err)
	}
	start := time.Now()
	if fb, err := svc.ReceiveFeedback(ctx, 200*time.Millisecond); err != nil || fb != nil || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("empty feedback with wait: %+v %v after %v", fb, err, time.Since(start))
	}

	for _, id := range []string{"p1", "p2", "p3"} {
		ack := "negative"
		if id == "p3" {
			ack = "positive" // no feedback for a purge
		}
		if _, err := svc.SendC2D(ctx, "dev", api.C2DMessage{MessageID: id, Ack: ack}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := svc.PurgeC2D(ctx, "dev")
	if err != nil || n != 3 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if n, err := svc.PurgeC2D(ctx, "dev"); err != nil || n != 0 {
		t.Fatalf("second purge: %d %v", n, err)
	}
	_, err = svc.PurgeC2D(ctx, "nobody")
	wantAPIError(t, err, http.StatusNotFound, "DeviceNotFound")

	// A waiting receive is woken by the batch.
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(50 * time.Millisecond)
		if err := store.Sweep(ctx); err != nil {
			t.Error(err)
		}
	}()
	fb, err := svc.ReceiveFeedback(ctx, 10*time.Second)
	<-done
	if err != nil || fb == nil {
		t.Fatalf("feedback: %+v %v", fb, err)
	}
	if fb.LockToken == "" || fb.UserID != "hub" || fb.SequenceNumber == 0 || fb.DeliveryCount != 0 || len(fb.Records) != 2 {
		t.Fatalf("feedback message %+v", fb)
	}
	for i, r := range fb.Records {
		if r.OriginalMessageID != []string{"p1", "p2"}[i] || r.StatusCode != "Purged" || r.DeviceID != "dev" ||
			r.DeviceGenerationID != dev.GenerationID || r.EnqueuedTime.IsZero() {
			t.Errorf("record %d: %+v", i, r)
		}
	}
	// Abandon: delivered again with a new lock and a higher delivery count.
	if err := svc.AbandonFeedback(ctx, fb.LockToken); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, svc.CompleteFeedback(ctx, fb.LockToken), http.StatusPreconditionFailed, "DeviceMessageLockLost")
	again, err := svc.ReceiveFeedback(ctx, time.Second)
	if err != nil || again == nil || again.LockToken == fb.LockToken || again.DeliveryCount != 1 || again.SequenceNumber != fb.SequenceNumber {
		t.Fatalf("after abandon: %+v %v", again, err)
	}
	if err := svc.CompleteFeedback(ctx, again.LockToken); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, svc.CompleteFeedback(ctx, again.LockToken), http.StatusPreconditionFailed, "DeviceMessageLockLost")
	wantAPIError(t, svc.AbandonFeedback(ctx, "no-such-lock"), http.StatusPreconditionFailed, "DeviceMessageLockLost")
	if fb, err := svc.ReceiveFeedback(ctx, 0); err != nil || fb != nil {
		t.Fatalf("feedback after complete: %+v %v", fb, err)
	}
	_, err = f.client(t, "registryRead").ReceiveFeedback(ctx, 0)
	wantAPIError(t, err, http.StatusUnauthorized, "IotHubUnauthorizedAccess")
}

func TestC2DFeedbackRawHTTP(t *testing.T) {
	f, store := newC2DFixture(t, c2d.Settings{})
	ctx := context.Background()
	if _, err := f.client(t, "registryReadWrite").CreateDevice(ctx, api.Device{DeviceID: "dev"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Send(ctx, "dev", c2d.Message{MessageID: "m", Ack: c2d.AckFull}); err != nil {
		t.Fatal(err)
	}
	m, _, _ := store.Receive(ctx, "dev")
	if err := store.Complete(ctx, "dev", m.LockToken); err != nil {
		t.Fatal(err)
	}
	if err := store.FlushFeedback(ctx); err != nil {
		t.Fatal(err)
	}
	p := f.Policy(t, "service")
	token, _ := auth.Sign("localhost", p.Name, p.PrimaryKey, time.Now().Add(time.Hour))
	// Both spellings of the path, as IoT Hub's paths are case-insensitive.
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/messages/servicebound/feedback?api-version=2021-04-12", nil)
	req.Header.Set("Authorization", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != http.StatusOK || len(etag) < 3 || etag[0] != '"' || etag[len(etag)-1] != '"' ||
		resp.Header.Get("Content-Type") != api.FeedbackContentType || resp.Header.Get("iothub-userid") != "hub" {
		t.Fatalf("feedback response %d %v", resp.StatusCode, resp.Header)
	}
	req, _ = http.NewRequest(http.MethodDelete, f.srv.URL+"/messages/serviceBound/feedback/"+strings.Trim(etag, `"`)+"?api-version=2021-04-12", nil)
	req.Header.Set("Authorization", token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("complete: %d", resp.StatusCode)
	}
}
