package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
)

// streamServer serves body as the event stream, over TLS like the hub.
func streamServer(t testing.TB, body func(w http.ResponseWriter)) *Client {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/messages/events" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		body(w)
	}))
	t.Cleanup(srv.Close)
	cs := auth.ServiceConnectionString("localhost", "service", "c2VjcmV0").String()
	c, err := New(cs, WithEndpoint(srv.URL), WithTLSConfig(srv.Client().Transport.(*http.Transport).TLSClientConfig))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReadEventsAndOpenEvents(t *testing.T) {
	lines := []string{
		`{"deviceId":"a","partition":0,"sequenceNumber":1,"systemProperties":{},"properties":{"k":"v"},"body":"one"}`,
		``, // a heartbeat
		`{"deviceId":"b","partition":1,"sequenceNumber":2,"systemProperties":{},"properties":{},"bodyBase64":"AA=="}`,
	}
	errLine := `{"error":{"status":400,"Message":"ErrorCode:ArgumentInvalid;fell behind","ExceptionMessage":"fell behind"}}`
	for name, tc := range map[string]struct {
		lines   []string
		wantErr func(error) bool
	}{
		"ends":       {lines, func(err error) bool { return err == nil }},
		"error line": {append(lines, errLine), func(err error) bool { var e *Error; return errors.As(err, &e) && e.Code == "ArgumentInvalid" }},
		"bad line":   {append(lines, `{"deviceId":`), func(err error) bool { return err != nil && strings.Contains(err.Error(), "decode event") }},
	} {
		t.Run(name, func(t *testing.T) {
			c := streamServer(t, func(w http.ResponseWriter) { io.WriteString(w, strings.Join(tc.lines, "\n")+"\n") })

			got, err := readAllEvents(c)
			if !tc.wantErr(err) {
				t.Fatalf("ReadEvents: %v", err)
			}
			// ReadEvents hands out events to keep: the first is intact after the second.
			if len(got) != 2 || got[0].DeviceID != "a" || got[0].Properties["k"] != "v" || *got[0].Body != "one" ||
				got[1].DeviceID != "b" || got[1].Body != nil || got[1].BodyBase64 != "AA==" || len(got[1].Properties) != 0 {
				t.Fatalf("ReadEvents: %+v", got)
			}

			s, err := c.OpenEvents(context.Background(), ReadOptions{From: "start"})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var ids []string
			for {
				ev, err := s.Next()
				if err != nil {
					if errors.Is(err, io.EOF) {
						err = nil
					}
					if !tc.wantErr(err) {
						t.Fatalf("Next: %v", err)
					}
					break
				}
				ids = append(ids, ev.DeviceID)
				if ev.DeviceID == "b" && (ev.Properties["k"] != "" || ev.Body != nil) {
					t.Fatalf("the second event shows the first's: %+v", ev)
				}
			}
			if strings.Join(ids, ",") != "a,b" {
				t.Fatalf("Next read %v", ids)
			}
		})
	}
}

// BenchmarkReadEvents is a reader's whole work per event, hub lines over TLS: decryption, the
// HTTP chunks, the lines and the decoding, with EventStream.Next (the server's side, in the
// same process, only writes prepared bytes).
func BenchmarkReadEvents(b *testing.B) {
	var chunk []byte
	for len(chunk) < 32<<10 {
		chunk = append(chunk, hubLine+"\n"...)
	}
	perChunk := strings.Count(string(chunk), "\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := streamServer(b, func(w http.ResponseWriter) {
		for ctx.Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	s, err := c.OpenEvents(ctx, ReadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetBytes(int64(len(chunk) / perChunk))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

// readAllEvents reads the stream to its end with ReadEvents and keeps every event it hands out.
func readAllEvents(c *Client) ([]api.Event, error) {
	var got []api.Event
	err := c.ReadEvents(context.Background(), ReadOptions{}, func(ev api.Event) error {
		got = append(got, ev)
		return nil
	})
	return got, err
}
