package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/client"
)

// MonitorCmd prints messages from the built-in endpoint, like `az iot hub monitor-events`.
type MonitorCmd struct {
	Device  string        `name:"device" help:"Only this device's messages."`
	From    string        `name:"from" default:"end" help:"Where to start: start, end, a sequence number, or an RFC 3339 time."`
	Timeout time.Duration `name:"timeout" help:"Exit after this long without a new message (0 = never)."`
	JSON    bool          `name:"json" help:"Print one JSON object per message and nothing else on stdout."`
}

// Run streams until interrupted or the timeout passes.
func (m *MonitorCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(env.ctx)
	defer cancel(nil)
	idle := errors.New("timeout")
	var timer *time.Timer
	if m.Timeout > 0 {
		timer = time.AfterFunc(m.Timeout, func() { cancel(idle) })
		defer timer.Stop()
	}
	if !m.JSON {
		fmt.Fprintf(env.Stderr, "Monitoring the built-in endpoint from %s (Ctrl-C to stop)...\n", m.From)
	}
	err = t.client.ReadEvents(ctx, client.ReadOptions{From: m.From, Device: m.Device}, func(ev api.Event) error {
		if timer != nil {
			timer.Reset(m.Timeout)
		}
		if m.JSON {
			return json.NewEncoder(env.Stdout).Encode(ev)
		}
		return printEvent(env.Stdout, ev)
	})
	if errors.Is(context.Cause(ctx), idle) || env.ctx.Err() != nil {
		return nil
	}
	return err
}

// printEvent writes a message for people: header line, properties, body (JSON indented).
func printEvent(w io.Writer, ev api.Event) error {
	var b strings.Builder
	who := ev.DeviceID
	if ev.ModuleID != "" {
		who += "/" + ev.ModuleID
	}
	fmt.Fprintf(&b, "%s  %s  partition %d  sequence %d\n", ev.EnqueuedTime.Format(time.RFC3339Nano), who, ev.Partition, ev.SequenceNumber)
	writeProps(&b, "system properties", ev.SystemProperties)
	writeProps(&b, "properties", ev.Properties)
	switch {
	case ev.Body != nil:
		var pretty bytes.Buffer
		if json.Valid([]byte(*ev.Body)) && json.Indent(&pretty, []byte(*ev.Body), "    ", "  ") == nil {
			fmt.Fprintf(&b, "  body:\n    %s\n", pretty.String())
		} else {
			fmt.Fprintf(&b, "  body: %s\n", *ev.Body)
		}
	default:
		fmt.Fprintf(&b, "  body (base64): %s\n", ev.BodyBase64)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writeProps(b *strings.Builder, title string, props map[string]string) {
	if len(props) == 0 {
		return
	}
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintf(b, "  %s:\n", title)
	for _, k := range names {
		fmt.Fprintf(b, "    %s: %s\n", k, props[k])
	}
}
