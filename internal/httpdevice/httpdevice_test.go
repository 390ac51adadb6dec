package httpdevice

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/hubtest"
	"github.com/tetherhub/tether/internal/message"
	"github.com/tetherhub/tether/internal/registry"
	"github.com/tetherhub/tether/internal/telemetry"
)

type fixture struct {
	*hubtest.Storage
	srv   *httptest.Server
	keys  map[string]string // device or device/module -> primary key
	bound *recordingBound
}

// newFixture serves the device API over a real hub with a registry and telemetry log in a temp
// dir, with devices dev1 and dev2 and module dev1/mod1.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	st := hubtest.New(t, telemetry.Options{SegmentBytes: 4 << 20})
	f := &fixture{Storage: st, keys: map[string]string{}, bound: &recordingBound{}}
	for _, id := range []string{"dev1", "dev2", "dev+3%$x"} {
		f.keys[id] = st.CreateDevice(t, id)
	}
	m, err := st.Registry.CreateModule(context.Background(), registry.Module{DeviceID: "dev1", ModuleID: "mod1"})
	if err != nil {
		t.Fatal(err)
	}
	f.keys["dev1/mod1"] = m.Authentication.SymmetricKey.PrimaryKey
	f.srv = httptest.NewTLSServer(New(Config{Hub: st.Hub(hub.Config{}), DeviceBound: f.bound}))
	t.Cleanup(f.srv.Close)
	return f
}

// token signs a SAS token for identity ("dev1" or "dev1/mod1") with its own key.
func (f *fixture) token(t *testing.T, identity string, expiry time.Time) string {
	t.Helper()
	dev, mod, _ := strings.Cut(identity, "/")
	sr := "localhost/devices/" + dev
	if mod != "" {
		sr += "/modules/" + mod
	}
	tok, err := auth.Sign(sr, "", f.keys[identity], expiry)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) policyToken(t *testing.T, name, sr string) string {
	t.Helper()
	p := f.Policy(t, name)
	tok, err := auth.Sign(sr, p.Name, p.PrimaryKey, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) do(t *testing.T, method, path, token string, header http.Header, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// wantError checks IoT Hub's error response form.
func wantError(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, b)
	}
	if got := resp.Header.Get("iothub-errorcode"); got != code {
		t.Errorf("iothub-errorcode = %q, want %q", got, code)
	}
	if resp.Header.Get("x-ms-request-id") == "" {
		t.Error("no x-ms-request-id")
	}
	var body api.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("error body: %v", err)
	}
	if body.Code() != code || body.Text() == "" {
		t.Errorf("error body = %+v, want code %s", body, code)
	}
}

const eventsPath = "/devices/dev1/messages/events?api-version=2021-04-12"

func TestSendEventWithEveryHeader(t *testing.T) {
	f := newFixture(t)
	hdr := http.Header{}
	// Header names as the Node SDK writes them; HTTP makes them case-insensitive.
	for k, v := range map[string]string{
		"IoTHub-MessageId":            "mid-1",
		"IoTHub-CorrelationId":        "cid-1",
		"IoTHub-UserId":               "user-1",
		"IoTHub-To":                   "/devices/dev1/messages/events",
		"IoTHub-Expiry":               "Tue Jan 01 2030 00:00:00 GMT+0000 (Coordinated Universal Time)",
		"iothub-contenttype":          "application/json",
		"iothub-contentencoding":      "utf-8",
		"iothub-creationtimeutc":      "2026-01-02T03:04:05.678Z",
		"iothub-messageschema":        "schema-1",
		"iothub-interface-id":         "dtmi:com:example:Thermostat;1",
		"dt-subject":                  "thermostat1",
		"IoTHub-Ack":                  "full",
		"iothub-app-prop-a":           "alpha",
		"iothub-app-Path":             "x=1&y=2 /z",
		"iothub-operation":            "d2c",
		"iothub-connection-device-id": "spoofed",
		"Content-Type":                "application/octet-stream",
	} {
		hdr.Set(k, v)
	}
	body := `{"temperature":21.5}`
	// No Content-Length: the SDKs send chunked bodies.
	resp := f.do(t, "POST", eventsPath, f.token(t, "dev1", time.Now().Add(time.Hour)), hdr, io.MultiReader(strings.NewReader(body)))
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if resp.Header.Get("x-ms-request-id") == "" {
		t.Error("no x-ms-request-id")
	}
	got := f.Stored(t)
	if len(got) != 1 {
		t.Fatalf("stored %d messages, want 1", len(got))
	}
	m := got[0]
	dev, _ := f.Registry.GetDevice(context.Background(), "dev1")
	if time.Since(m.EnqueuedTime) > time.Minute {
		t.Errorf("enqueued time %v", m.EnqueuedTime)
	}
	m.EnqueuedTime = time.Time{}
	want := message.Message{
		MessageID:                  "mid-1",
		CorrelationID:              "cid-1",
		UserID:                     "user-1",
		To:                         "/devices/dev1/messages/events",
		ContentType:                "application/json",
		ContentEncoding:            "utf-8",
		ExpiryTime:                 "Tue Jan 01 2030 00:00:00 GMT+0000 (Coordinated Universal Time)",
		CreationTime:               "2026-01-02T03:04:05.678Z",
		MessageSchema:              "schema-1",
		InterfaceID:                "dtmi:com:example:Thermostat;1",
		ComponentName:              "thermostat1",
		ConnectionDeviceID:         "dev1",
		ConnectionAuthGenerationID: dev.GenerationID,
		ConnectionAuthMethod:       `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`,
		Source:                     "Telemetry",
		// Names from headers arrive in lower case (see the package comment).
		Properties: map[string]string{"prop-a": "alpha", "path": "x=1&y=2 /z", "iothub-ack": "full"},
		Body:       []byte(body),
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("stored\n%+v\nwant\n%+v", m, want)
	}
	if dev.LastActivityTime.IsZero() || time.Since(dev.LastActivityTime) > time.Minute {
		t.Errorf("lastActivityTime not recorded: %v", dev.LastActivityTime)
	}
}

func TestSendEventAsModuleAndWithPolicyToken(t *testing.T) {
	f := newFixture(t)
	resp := f.do(t, "POST", "/devices/dev1/modules/mod1/messages/events?api-version=2020-09-30", f.token(t, "dev1/mod1", time.Now().Add(time.Hour)), nil, strings.NewReader("from module"))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("module send: status %d", resp.StatusCode)
	}
	// A policy with DeviceConnect sends as the device in the path; the id is percent-encoded.
	resp = f.do(t, "POST", "/devices/dev%2B3%25%24x/messages/events?api-version=2016-11-14", f.policyToken(t, "device", "localhost/devices"), nil, strings.NewReader("from policy"))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("policy send: status %d", resp.StatusCode)
	}
	got := f.Stored(t)
	if len(got) != 2 {
		t.Fatalf("stored %d messages, want 2", len(got))
	}
	byBody := map[string]message.Message{}
	for _, m := range got {
		byBody[string(m.Body)] = m
	}
	if m := byBody["from module"]; m.ConnectionDeviceID != "dev1" || m.ConnectionModuleID != "mod1" || !strings.Contains(m.ConnectionAuthMethod, `"scope":"module"`) {
		t.Errorf("module message stamps: %+v", m)
	}
	if m := byBody["from policy"]; m.ConnectionDeviceID != "dev+3%$x" || !strings.Contains(m.ConnectionAuthMethod, `"scope":"hub"`) {
		t.Errorf("policy message stamps: %+v", m)
	}
}

func TestSendBatch(t *testing.T) {
	f := newFixture(t)
	batch := `[
		{"body": "` + base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 0xff}) + `", "properties": {"iothub-app-Color": "red", "iothub-messageid": "b-1"}},
		{"body": "plain text é", "base64Encoded": false, "properties": {"IoTHub-App-n": "2", "iothub-correlationid": "c-2", "dt-subject": "comp", "iothub-contenttype": "text/plain", "iothub-connection-device-id": "spoof"}},
		{"body": "` + base64.StdEncoding.EncodeToString([]byte(`{"x":3}`)) + `", "base64Encoded": true}
	]`
	hdr := http.Header{"Content-Type": {"application/vnd.microsoft.iothub.json; charset=utf-8"}}
	resp := f.do(t, "POST", eventsPath, f.token(t, "dev1", time.Now().Add(time.Hour)), hdr, strings.NewReader(batch))
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	got := f.Stored(t)
	if len(got) != 3 {
		t.Fatalf("stored %d messages, want 3", len(got))
	}
	type summary struct {
		Body                            string
		MessageID, CorrelationID, Sub   string
		ContentType, Device, Generation string
		Props                           map[string]string
	}
	dev, _ := f.Registry.GetDevice(context.Background(), "dev1")
	var sums []summary
	for i, m := range got {
		sums = append(sums, summary{string(m.Body), m.MessageID, m.CorrelationID, m.ComponentName, m.ContentType, m.ConnectionDeviceID, m.ConnectionAuthGenerationID, m.Properties})
		if m.Source != "Telemetry" || m.EnqueuedTime.IsZero() {
			t.Errorf("message %d not stamped: %+v", i, m)
		}
	}
	want := []summary{
		{"\x00\x01\x02\xff", "b-1", "", "", "", "dev1", dev.GenerationID, map[string]string{"Color": "red"}},
		{"plain text é", "", "c-2", "comp", "text/plain", "dev1", dev.GenerationID, map[string]string{"n": "2"}},
		{`{"x":3}`, "", "", "", "", "dev1", dev.GenerationID, nil},
	}
	if !reflect.DeepEqual(sums, want) {
		t.Errorf("stored\n%+v\nwant\n%+v", sums, want)
	}
}

func TestRefusalsStoreNothing(t *testing.T) {
	f := newFixture(t)
	good := f.token(t, "dev1", time.Now().Add(time.Hour))
	batchHdr := http.Header{"Content-Type": {BatchContentType}}
	big := strings.Repeat("x", message.MaxD2CSize+1)
	bigB64 := base64.StdEncoding.EncodeToString(make([]byte, 100<<10))
	for _, tc := range []struct {
		name   string
		method string
		path   string
		token  string
		header http.Header
		body   io.Reader
		status int
		code   string
	}{
		{"malformed batch JSON", "POST", eventsPath, good, batchHdr, strings.NewReader(`[{"body": "aGk="`), 400, "IotHubFormatError"},
		{"batch not an array", "POST", eventsPath, good, batchHdr, strings.NewReader(`{"body": "aGk="}`), 400, "IotHubFormatError"},
		{"batch property not a string", "POST", eventsPath, good, batchHdr, strings.NewReader(`[{"body": "aGk=", "properties": {"iothub-app-n": 1}}]`), 400, "IotHubFormatError"},
		{"empty batch", "POST", eventsPath, good, batchHdr, strings.NewReader(`[]`), 400, "IotHubFormatError"},
		{"wrong base64 in a batch", "POST", eventsPath, good, batchHdr, strings.NewReader(`[{"body": "aGk="}, {"body": "not base64!"}]`), 400, "IotHubFormatError"},
		{"invalid message id in a batch", "POST", eventsPath, good, batchHdr, strings.NewReader(`[{"body": "aGk="}, {"body": "aGk=", "properties": {"iothub-messageid": "a b"}}]`), 400, "ArgumentInvalid"},
		{"invalid message id", "POST", eventsPath, good, http.Header{"Iothub-Messageid": {"a b"}}, strings.NewReader("hi"), 400, "ArgumentInvalid"},
		{"oversized body, chunked", "POST", eventsPath, good, nil, io.MultiReader(strings.NewReader(big)), 413, "MessageTooLarge"},
		{"oversized body, with length", "POST", eventsPath, good, nil, strings.NewReader(big), 413, "MessageTooLarge"},
		{"body at the limit plus properties", "POST", eventsPath, good, http.Header{"Iothub-App-K": {"v"}}, strings.NewReader(big[:message.MaxD2CSize]), 413, "MessageTooLarge"},
		{"oversized batch", "POST", eventsPath, good, batchHdr, strings.NewReader(`[{"body":"` + bigB64 + `"},{"body":"` + bigB64 + `"},{"body":"` + bigB64 + `"}]`), 413, "MessageTooLarge"},
		{"no token", "POST", eventsPath, "", nil, strings.NewReader("hi"), 401, "IotHubUnauthorizedAccess"},
		{"malformed token", "POST", eventsPath, "Bearer abc", nil, strings.NewReader("hi"), 401, "IotHubUnauthorizedAccess"},
		{"expired token", "POST", eventsPath, f.token(t, "dev1", time.Now().Add(-time.Minute)), nil, strings.NewReader("hi"), 401, "IotHubUnauthorizedAccess"},
		{"wrong key", "POST", eventsPath, strings.Replace(f.token(t, "dev2", time.Now().Add(time.Hour)), "devices%2Fdev2", "devices%2Fdev1", 1), nil, strings.NewReader("hi"), 401, "IotHubUnauthorizedAccess"},
		{"another device's path", "POST", "/devices/dev2/messages/events", good, nil, strings.NewReader("hi"), 401, "IotHubUnauthorizedAccess"},
		{"the device's token on its module's path", "POST", "/devices/dev1/modules/mod1/messages/events", good, nil, strings.NewReader("hi"), 401, "IotHubUnauthorizedAccess"},
		{"a module's token on its device's path", "POST", eventsPath, f.token(t, "dev1/mod1", time.Now().Add(time.Hour)), nil, strings.NewReader("hi"), 401, "IotHubUnauthorizedAccess"},
		{"unknown device", "POST", "/devices/nobody/messages/events", f.policyToken(t, "device", "localhost/devices"), nil, strings.NewReader("hi"), 401, "IotHubUnauthorizedAccess"},
		{"policy without DeviceConnect", "POST", eventsPath, f.policyToken(t, "service", "localhost"), nil, strings.NewReader("hi"), 401, "IotHubUnauthorizedAccess"},
		{"GET on events", "GET", eventsPath, good, nil, nil, 405, "InvalidOperation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.Stored(t))
			resp := f.do(t, tc.method, tc.path, tc.token, tc.header, tc.body)
			wantError(t, resp, tc.status, tc.code)
			if n := len(f.Stored(t)); n != before {
				t.Fatalf("stored %d messages on a refused request", n-before)
			}
		})
	}
}

// recordingBound stands in for the cloud-to-device half.
type recordingBound struct{ got []DeviceBoundRequest }

func (b *recordingBound) ServeDeviceBound(w http.ResponseWriter, r *http.Request, req DeviceBoundRequest) {
	b.got = append(b.got, req)
	w.WriteHeader(http.StatusNoContent)
}

func TestDeviceBoundSeam(t *testing.T) {
	f := newFixture(t)
	good := f.token(t, "dev1", time.Now().Add(time.Hour))
	for _, tc := range []struct {
		method, path string
		op           DeviceBoundOp
		lock         string
	}{
		{"GET", "/devices/dev1/messages/devicebound?api-version=2021-04-12", OpReceive, ""},
		{"GET", "/devices/dev1/messages/deviceBound?api-version=2020-09-30", OpReceive, ""},
		{"DELETE", "/devices/dev1/messages/devicebound/lock-1?api-version=2021-04-12", OpComplete, "lock-1"},
		{"DELETE", "/devices/dev1/messages/devicebound/lock-2?api-version=2021-04-12&reject", OpReject, "lock-2"},
		{"POST", "/devices/dev1/messages/devicebound/lock-3/abandon?api-version=2021-04-12", OpAbandon, "lock-3"},
	} {
		f.bound.got = nil
		resp := f.do(t, tc.method, tc.path, good, nil, nil)
		if resp.StatusCode != 204 || len(f.bound.got) != 1 {
			t.Fatalf("%s %s: status %d, %d calls", tc.method, tc.path, resp.StatusCode, len(f.bound.got))
		}
		if g := f.bound.got[0]; g.Op != tc.op || g.LockToken != tc.lock || g.Identity.DeviceID != "dev1" || g.RequestID == "" {
			t.Errorf("%s %s: got %+v", tc.method, tc.path, g)
		}
	}
	f.bound.got = nil
	wantError(t, f.do(t, "GET", "/devices/dev2/messages/devicebound", good, nil, nil), 401, "IotHubUnauthorizedAccess")
	if len(f.bound.got) != 0 {
		t.Error("an unauthenticated request reached the seam")
	}

	// Without an implementation, devicebound requests are refused after authentication.
	h := New(Config{Hub: nil})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/devices/dev1/messages/devicebound", nil))
	if rec.Code != 401 {
		t.Errorf("no token: status %d", rec.Code)
	}
}

func TestOwns(t *testing.T) {
	h := New(Config{})
	for path, want := range map[string]bool{
		"/devices/d1/messages/events":                  true,
		"/devices/d%2F1/messages/events":               true,
		"/devices/d1/modules/m1/messages/events":       true,
		"/devices/d1/messages/devicebound":             true,
		"/devices/d1/messages/deviceBound/tok":         true,
		"/devices/d1/messages/devicebound/tok/abandon": true,
		"/devices/d1/modules/m1/messages/devicebound":  false,
		"/devices/d1":                   false,
		"/devices/d1/modules/m1":        false,
		"/devices//messages/events":     false,
		"/devices/d1/messages/events/x": false,
		"/devices/d1/twin":              false,
		"/messages/events":              false,
		"/$iothub/websocket":            false,
	} {
		r := httptest.NewRequest("GET", "https://h"+path, nil)
		if got := h.Owns(r); got != want {
			t.Errorf("Owns(%s) = %v, want %v", path, got, want)
		}
	}
}

func TestMessageFromHeadersIgnoresOtherHeaders(t *testing.T) {
	hdr := http.Header{}
	hdr.Set("User-Agent", "azure-iot-device/1.18.4")
	hdr.Set("Authorization", "SharedAccessSignature sr=x")
	hdr.Set("iothub-app-", "empty name")
	m := messageFromHeaders(hdr, []byte("b"))
	if m.MessageID != "" || !bytes.Equal(m.Body, []byte("b")) || len(m.Properties) != 1 || m.Properties[""] != "empty name" {
		t.Errorf("message = %+v", m)
	}
	// An empty property name is refused by the hub's validation.
	if err := m.Validate(); err == nil {
		t.Error("empty property name validated")
	}
}
