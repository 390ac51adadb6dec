package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
	"github.com/tetherhub/tether/internal/auth"
)

// Device is one simulated connection: what it sends in CONNECT and where it publishes.
type Device struct {
	ID       string // MQTT client id; also the device id the hub stamps (for --e2e)
	Username string // empty: no username flag
	Password string // empty: no password flag
	Topic    string
}

// apiVersion is what the Azure IoT SDKs send in the username (sdk-wire-notes §4).
const apiVersion = "2021-04-12"

// DeviceIDs returns n device ids prefix0..prefix(n-1). They are not zero-padded, so a smaller
// run reuses the first devices of a larger one (--keep-devices, then --no-create-devices).
func DeviceIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i)
	}
	return ids
}

// HubDevice returns an IoT Hub device connection as the SDKs make it: client id = device id,
// username "{host}/{id}/?api-version=...", password a SAS token, topic the device's events
// topic with an empty property bag.
func HubDevice(host, id, token string) Device {
	return Device{
		ID:       id,
		Username: host + "/" + id + "/?api-version=" + apiVersion + "&DeviceClientType=" + url.QueryEscape("tether-bench"),
		Password: token,
		Topic:    "devices/" + id + "/messages/events/",
	}
}

// DeviceToken signs a SAS token for one device with its own key (sr = {host}/devices/{id}).
func DeviceToken(host, id, key string, expiry time.Time) (string, error) {
	return auth.Sign(host+"/devices/"+id, "", key, expiry)
}

// PolicyToken signs a SAS token with a hub policy that has DeviceConnect (normally "device"),
// valid for every device of the hub (sr = {host}/devices, skn = the policy).
func PolicyToken(host, policy, key string, expiry time.Time) (string, error) {
	return auth.Sign(host+"/devices", policy, key, expiry)
}

// GenericDevice returns a connection for any MQTT 3.1.1 broker: client id = id, and the
// topic, username and password with every "{device}" replaced by id.
func GenericDevice(id, topic, username, password string) Device {
	sub := func(s string) string { return strings.ReplaceAll(s, "{device}", id) }
	return Device{ID: id, Username: sub(username), Password: sub(password), Topic: sub(topic)}
}

// provisionParallel is how many registry requests run at once.
const provisionParallel = 8

// Provisioned is the outcome of Provision.
type Provisioned struct {
	Keys    []string // primary key of each device, in the order of the ids
	Created []string // the ids this run created (the ones Deprovision should delete)
}

// Provision makes sure every device in ids exists with SAS authentication and returns its
// primary key. Missing devices are created with hub-generated keys when create is true; devices
// that exist already are used as they are (and not listed in Created). With create false every
// device must exist.
func Provision(ctx context.Context, cl *client.Client, ids []string, create bool) (Provisioned, error) {
	p := Provisioned{Keys: make([]string, len(ids))}
	created := make([]bool, len(ids))
	err := forEach(ctx, len(ids), func(ctx context.Context, i int) error {
		id := ids[i]
		var dev api.Device
		var err error
		if create {
			dev, err = cl.CreateDevice(ctx, api.Device{
				DeviceID:       id,
				Status:         "enabled",
				Authentication: &api.Authentication{Type: "sas", SymmetricKey: &api.SymmetricKey{}},
			})
			if err == nil {
				created[i] = true
			} else if isConflict(err) {
				dev, err = cl.GetDevice(ctx, id)
			}
		} else {
			dev, err = cl.GetDevice(ctx, id)
		}
		if err != nil {
			return fmt.Errorf("device %s: %w", id, err)
		}
		if dev.Authentication == nil || dev.Authentication.SymmetricKey == nil || dev.Authentication.SymmetricKey.PrimaryKey == "" {
			return fmt.Errorf("device %s has no SAS key (authentication type %q)", id, authType(dev))
		}
		p.Keys[i] = dev.Authentication.SymmetricKey.PrimaryKey
		return nil
	})
	for i, ok := range created {
		if ok {
			p.Created = append(p.Created, ids[i])
		}
	}
	return p, err
}

// Deprovision deletes the devices; ones already gone are not an error.
func Deprovision(ctx context.Context, cl *client.Client, ids []string) error {
	return forEach(ctx, len(ids), func(ctx context.Context, i int) error {
		if err := cl.DeleteDevice(ctx, ids[i], "*"); err != nil && !client.IsNotFound(err) {
			return fmt.Errorf("delete device %s: %w", ids[i], err)
		}
		return nil
	})
}

func authType(d api.Device) string {
	if d.Authentication == nil {
		return ""
	}
	return d.Authentication.Type
}

func isConflict(err error) bool {
	var e *client.Error
	return errors.As(err, &e) && e.StatusCode == 409
}

// forEach runs fn for 0..n-1 on provisionParallel goroutines and returns the first error
// (which stops the remaining work).
func forEach(ctx context.Context, n int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(provisionParallel, n) {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// EventSource streams the messages reaching the hub's built-in endpoint, from now on, calling
// fn for each until ctx ends. Bodies that are not UTF-8 may be skipped.
type EventSource func(ctx context.Context, fn func(deviceID, body string)) error

// ClientEvents reads the built-in endpoint through the service API from "end". It reads
// with client.OpenEvents, which reuses each event's maps: a reader that falls behind the load
// measures its own backlog, not the hub.
func ClientEvents(cl *client.Client) EventSource {
	return func(ctx context.Context, fn func(deviceID, body string)) error {
		s, err := cl.OpenEvents(ctx, client.ReadOptions{From: "end", SkipProperties: true})
		if err != nil {
			return err
		}
		defer s.Close()
		for {
			ev, err := s.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if ev.Body != nil {
				fn(ev.DeviceID, *ev.Body)
			}
		}
	}
}
