package wsconn

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// serve starts an HTTP server whose Handler runs fn with each upgraded connection.
func serve(t *testing.T, fn func(nc net.Conn)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(&Handler{Serve: func(_ context.Context, nc net.Conn) {
		defer nc.Close()
		fn(nc)
	}})
	t.Cleanup(srv.Close)
	return srv
}

func dial(t *testing.T, srv *httptest.Server, protos ...string) *websocket.Conn {
	t.Helper()
	if protos == nil {
		protos = []string{"mqtt"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/$iothub/websocket",
		&websocket.DialOptions{Subprotocols: protos, CompressionMode: websocket.CompressionContextTakeover})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if c.Subprotocol() != "mqtt" {
		t.Errorf("subprotocol %q", c.Subprotocol())
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Errorf("compression negotiated: %q", ext)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func read(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	if typ != websocket.MessageBinary {
		t.Errorf("message type %v", typ)
	}
	return string(b)
}

func TestStreamAcrossMessages(t *testing.T) {
	got := make(chan string, 1)
	srv := serve(t, func(nc net.Conn) {
		buf := make([]byte, 6)
		if _, err := io.ReadFull(nc, buf); err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(buf)
		nc.Write([]byte("xyz"))
		// The client's normal close reads as EOF.
		if n, err := nc.Read(buf); n != 0 || err != io.EOF {
			t.Errorf("after the client's close: %d, %v", n, err)
		}
	})
	c := dial(t, srv)
	ctx := context.Background()
	for _, m := range []string{"ab", "", "cd", "ef"} {
		if err := c.Write(ctx, websocket.MessageBinary, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if s := <-got; s != "abcdef" {
		t.Fatalf("server read %q", s)
	}
	if s := read(t, c); s != "xyz" {
		t.Fatalf("client read %q", s)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// TestReadDeadlineLeavesConnectionWritable is what graceful MQTT shutdown needs: a read deadline
// ends a blocked read with os.ErrDeadlineExceeded, and writes still reach the client.
func TestReadDeadlineLeavesConnectionWritable(t *testing.T) {
	done := make(chan error, 1)
	srv := serve(t, func(nc net.Conn) {
		nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := nc.Read(make([]byte, 10))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			done <- err
			return
		}
		// An already passed deadline too (what mqtt's stop sets).
		nc.SetReadDeadline(time.Unix(1, 0))
		if _, err := nc.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			done <- err
			return
		}
		_, err = nc.Write([]byte("still here"))
		done <- err
	})
	c := dial(t, srv)
	if s := read(t, c); s != "still here" {
		t.Fatalf("client read %q", s)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Then the server's Close sends a normal close frame.
	_, _, err := c.Read(context.Background())
	if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after server close: %v", err)
	}
}

// TestCloseIsPrompt: Close neither waits for a peer that does not answer the close handshake nor
// for a blocked reader, and ends that reader.
func TestCloseIsPrompt(t *testing.T) {
	var wg sync.WaitGroup
	took := make(chan time.Duration, 1)
	readErr := make(chan error, 1)
	srv := serve(t, func(nc net.Conn) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := nc.Read(make([]byte, 1))
			readErr <- err
		}()
		time.Sleep(20 * time.Millisecond) // let the reader block
		start := time.Now()
		nc.Close()
		took <- time.Since(start)
		wg.Wait()
		if err := nc.SetReadDeadline(time.Now().Add(time.Hour)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("deadline after close: %v", err)
		}
	})
	dial(t, srv) // never reads, so never answers the close frame
	if d := <-took; d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	if err := <-readErr; err == nil {
		t.Fatal("blocked read did not fail on close")
	}
}

func TestRefusesOtherSubprotocols(t *testing.T) {
	srv := serve(t, func(net.Conn) { t.Error("served a connection without the mqtt subprotocol") })
	for _, protos := range [][]string{{"AMQPWSB10"}, {}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/$iothub/websocket", &websocket.DialOptions{Subprotocols: protos})
		cancel()
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("subprotocols %v: err %v, resp %v", protos, err, resp)
		}
	}
	// A plain GET is not an upgrade.
	resp, err := http.Get(srv.URL + "/$iothub/websocket")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 4 {
		t.Errorf("plain GET: status %d", resp.StatusCode)
	}
}

func TestTextMessageIsAnError(t *testing.T) {
	done := make(chan error, 1)
	srv := serve(t, func(nc net.Conn) {
		_, err := nc.Read(make([]byte, 10))
		done <- err
	})
	c := dial(t, srv)
	c.Write(context.Background(), websocket.MessageText, []byte("hello"))
	if err := <-done; err == nil {
		t.Fatal("a text message was read as stream data")
	}
}
