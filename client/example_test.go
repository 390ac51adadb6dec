package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
)

// A back-end that trusts the hub's private CA and manages devices.
func Example() {
	pem, err := os.ReadFile(os.ExpandEnv("$HOME/.local/share/tether/tls/ca.pem"))
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c, err := client.New(os.Getenv("TETHER_HUB"), // HostName=...;SharedAccessKeyName=iothubowner;SharedAccessKey=...
		client.WithTLSConfig(&tls.Config{RootCAs: pool}),
		client.WithEndpoint("https://localhost:8443")) // when the hub does not listen on 443
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	dev, err := c.CreateDevice(ctx, api.Device{DeviceID: "thermostat-1"}) // keys are generated
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(dev.DeviceID, dev.Authentication.SymmetricKey.PrimaryKey != "")
	devices, err := c.ListDevices(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range devices {
		fmt.Println(d.DeviceID, d.ConnectionState, d.LastActivityTime)
	}
}

// Read telemetry as a consumer group and checkpoint it, so that a restarted reader resumes
// after the last event it processed: nothing is skipped, and at most the last few seconds are
// seen twice.
func ExampleCheckpointer() {
	c, err := client.New(os.Getenv("TETHER_HUB")) // a policy with ServiceConnect, e.g. "service"
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	cp := c.NewCheckpointer("analytics")
	go func() {
		for range time.Tick(5 * time.Second) {
			if err := cp.Commit(ctx); err != nil {
				log.Print(err)
			}
		}
	}()
	err = c.ReadEvents(ctx, client.ReadOptions{
		ConsumerGroup: "analytics", // created once with CreateConsumerGroup (iothubowner)
		Resume:        true,        // after the group's checkpoints...
		From:          "start",     // ...or, in partitions without one, from the oldest event
	}, func(ev api.Event) error {
		if ev.Body != nil {
			fmt.Println(ev.DeviceID, ev.Partition, ev.SequenceNumber, *ev.Body)
		}
		cp.Mark(ev) // processed
		return nil
	})
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		// e.g. ArgumentInvalid: the checkpoint is below what retention kept.
		log.Fatalf("%s: %s", apiErr.Code, apiErr.Message)
	}
}

// Replay what arrived since a point in time, from every partition.
func ExampleClient_ReadEvents_byTime() {
	c, err := client.New(os.Getenv("TETHER_HUB"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	since := time.Now().Add(-time.Hour).Format(time.RFC3339)
	_ = c.ReadEvents(ctx, client.ReadOptions{From: since}, func(ev api.Event) error {
		fmt.Println(ev.EnqueuedTime, ev.DeviceID)
		return nil
	})
}

// Follow a busy hub with as little work per event as possible: the stream reuses each event
// (copy what is kept) and, here, does not decode the properties.
func ExampleClient_OpenEvents() {
	c, err := client.New(os.Getenv("TETHER_HUB"))
	if err != nil {
		log.Fatal(err)
	}
	s, err := c.OpenEvents(context.Background(), client.ReadOptions{From: "end", SkipProperties: true})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	bytes := map[string]int{}
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		if ev.Body != nil {
			bytes[ev.DeviceID] += len(*ev.Body) // strings are the caller's to keep
		}
	}
	fmt.Println(bytes)
}

// Partition properties, like Event Hubs' GetPartitionProperties.
func ExampleClient_Partitions() {
	c, err := client.New(os.Getenv("TETHER_HUB"))
	if err != nil {
		log.Fatal(err)
	}
	parts, err := c.Partitions(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range parts {
		fmt.Println(p.Partition, p.BeginningSequenceNumber, p.LastEnqueuedSequenceNumber, p.LastEnqueuedTime)
	}
}

func ExampleClient_CreateConsumerGroup() {
	c, err := client.New(os.Getenv("TETHER_HUB")) // iothubowner: groups need ServiceConnect and RegistryWrite
	if err != nil {
		log.Fatal(err)
	}
	g, err := c.CreateConsumerGroup(context.Background(), "analytics") // idempotent
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(g.Name)
}
