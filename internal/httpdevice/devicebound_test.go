package httpdevice

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/c2d"
)

func newC2DStore(t *testing.T) *c2d.Store {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := c2d.Open(db, c2d.Options{HubName: "hub", SweepInterval: -1, Settings: c2d.Settings{MaxDeliveryCount: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func serveBound(t *testing.T, b DeviceBound, op DeviceBoundOp, lock string) *httptest.ResponseRecorder {
	t.Helper()
	method, path := http.MethodGet, "/devices/dev1/messages/devicebound"
	switch op {
	case OpComplete:
		method, path = http.MethodDelete, path+"/"+lock
	case OpReject:
		method, path = http.MethodDelete, path+"/"+lock+"?reject"
	case OpAbandon:
		method, path = http.MethodPost, path+"/"+lock+"/abandon"
	}
	w := httptest.NewRecorder()
	b.ServeDeviceBound(w, httptest.NewRequest(method, path, nil),
		DeviceBoundRequest{Identity: auth.DeviceIdentity{DeviceID: "dev1"}, Op: op, LockToken: lock, RequestID: "r"})
	return w
}

func TestDeviceBoundReceiveHeaders(t *testing.T) {
	s := newC2DStore(t)
	b := NewDeviceBound(s, nil)
	if w := serveBound(t, b, OpReceive, ""); w.Code != http.StatusNoContent {
		t.Fatalf("empty queue: %d", w.Code)
	}
	exp := time.Now().Add(time.Hour).UTC().Truncate(100 * time.Millisecond)
	sent, err := s.Send(context.Background(), "dev1", c2d.Message{MessageID: "m1", CorrelationID: "c1", UserID: "u1",
		ContentType: "application/json", ContentEncoding: "utf-8", ExpiryTime: exp, Ack: c2d.AckFull,
		Properties: map[string]string{"Color": "blue", "empty": ""}, Body: []byte(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	w := serveBound(t, b, OpReceive, "")
	if w.Code != http.StatusOK || w.Body.String() != `{"x":1}` {
		t.Fatalf("receive: %d %q", w.Code, w.Body.String())
	}
	h := w.Result().Header
	raw := func(name string) string {
		v, _ := rawHeader(h, name)
		return v
	}
	etag := raw("ETag")
	if len(etag) < 3 || etag[0] != '"' || etag[len(etag)-1] != '"' {
		t.Fatalf("ETag %q is not quoted", etag)
	}
	want := map[string]string{
		"iothub-messageid":       "m1",
		"iothub-correlationid":   "c1",
		"iothub-userid":          "u1",
		"iothub-to":              "/devices/dev1/messages/devicebound",
		"iothub-ack":             "full",
		"iothub-sequencenumber":  strconv.FormatUint(sent.SequenceNumber, 10),
		"iothub-expiry":          exp.Format("2006-01-02T15:04:05.0000000Z"),
		"iothub-enqueuedtime":    sent.EnqueuedTime.Format(c2dTimeLayout),
		"iothub-deliverycount":   "0",
		"iothub-contenttype":     "application/json",
		"iothub-contentencoding": "utf-8",
		"ContentType":            "application/json",
		"ContentEncoding":        "utf-8",
		"iothub-app-Color":       "blue",
		"Content-Type":           "application/json",
	}
	for k, v := range want {
		if got := raw(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if v, ok := rawHeader(h, "iothub-app-empty"); !ok || v != "" {
		t.Errorf("empty property header: %q %v", v, ok)
	}
	// Locked: nothing else visible.
	if w := serveBound(t, b, OpReceive, ""); w.Code != http.StatusNoContent {
		t.Fatalf("second receive while locked: %d", w.Code)
	}
	lock := strings.Trim(etag, `"`)
	if w := serveBound(t, b, OpComplete, lock); w.Code != http.StatusNoContent {
		t.Fatalf("complete: %d %s", w.Code, w.Body)
	}
	w = serveBound(t, b, OpComplete, lock)
	if w.Code != http.StatusPreconditionFailed || w.Header().Get("iothub-errorcode") != "DeviceMessageLockLost" {
		t.Fatalf("stale complete: %d %v", w.Code, w.Header())
	}
	if n := s.PendingCount("dev1"); n != 0 {
		t.Fatalf("pending after complete: %d", n)
	}
}

func TestDeviceBoundRejectAndAbandon(t *testing.T) {
	s := newC2DStore(t)
	b := NewDeviceBound(s, nil)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if _, err := s.Send(ctx, "dev1", c2d.Message{MessageID: id, Ack: c2d.AckFull}); err != nil {
			t.Fatal(err)
		}
	}
	receive := func() (string, string, string) {
		t.Helper()
		w := serveBound(t, b, OpReceive, "")
		if w.Code != http.StatusOK {
			t.Fatalf("receive: %d", w.Code)
		}
		id, _ := rawHeader(w.Header(), "iothub-messageid")
		etag, _ := rawHeader(w.Header(), "ETag")
		n, _ := rawHeader(w.Header(), "iothub-deliverycount")
		return id, strings.Trim(etag, `"`), n
	}
	id, lock, _ := receive()
	if id != "a" {
		t.Fatalf("first is %s", id)
	}
	if w := serveBound(t, b, OpReject, lock); w.Code != http.StatusNoContent {
		t.Fatalf("reject: %d", w.Code)
	}
	id, lock, n := receive()
	if id != "b" || n != "0" {
		t.Fatalf("after reject got %s (delivery count %s), want b: a rejected message is not redelivered", id, n)
	}
	if w := serveBound(t, b, OpAbandon, lock); w.Code != http.StatusNoContent {
		t.Fatalf("abandon: %d", w.Code)
	}
	if w := serveBound(t, b, OpAbandon, lock); w.Code != http.StatusPreconditionFailed {
		t.Fatalf("stale abandon: %d", w.Code)
	}
	id, lock2, n := receive()
	if id != "b" || n != "1" || lock2 == lock {
		t.Fatalf("after abandon got %s with delivery count %s and lock %s (old %s)", id, n, lock2, lock)
	}
	// MaxDeliveryCount 2: the second abandon dead-letters it.
	if w := serveBound(t, b, OpAbandon, lock2); w.Code != http.StatusNoContent {
		t.Fatalf("abandon: %d", w.Code)
	}
	if w := serveBound(t, b, OpReceive, ""); w.Code != http.StatusNoContent {
		t.Fatalf("after max deliveries: %d", w.Code)
	}
	if err := s.FlushFeedback(ctx); err != nil {
		t.Fatal(err)
	}
	fm, ok, err := s.ReceiveFeedback(ctx)
	if err != nil || !ok || len(fm.Records) != 2 || fm.Records[0].StatusCode != c2d.StatusRejected || fm.Records[1].StatusCode != c2d.StatusDeliveryCountExceeded {
		t.Fatalf("feedback %+v %v %v", fm.Records, ok, err)
	}
}

// rawHeader reads a header by the name it was set with, not canonicalised: the handler writes
// IoT Hub's lower-case names and the C SDK's ContentType as they are.
func rawHeader(h http.Header, name string) (string, bool) {
	v, ok := h[name]
	if !ok || len(v) != 1 {
		return "", false
	}
	return v[0], true
}
