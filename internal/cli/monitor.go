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
	Device        string        `name:"device" help:"Only this device's messages."`
	From          string        `name:"from" default:"end" help:"Where to start: start, end, a sequence number, or an RFC 3339 time. With --consumer-group, only where the group has no checkpoint."`
	ConsumerGroup string        `name:"consumer-group" help:"Read as this consumer group, resuming after its checkpoints."`
	Resume        bool          `name:"resume" default:"true" negatable:"" help:"With --consumer-group, start each partition after the group's checkpoint (--no-resume: at --from)."`
	Checkpoint    bool          `name:"checkpoint" help:"Commit the group's checkpoint for each printed message (every second and on exit), so the next run resumes after it."`
	Timeout       time.Duration `name:"timeout" help:"Exit after this long without a new message (0 = never)."`
	JSON          bool          `name:"json" help:"Print one JSON object per message and nothing else on stdout."`
	Routes        bool          `name:"routes" help:"Tap the log before routing: every message, with the routes it matched and the endpoints it went to (needs RegistryWrite and ServiceConnect)."`
}

// checkpointInterval is how often `monitor --checkpoint` commits: a crash re-prints at most
// this much, and the hub sees one small write per partition per interval.
const checkpointInterval = time.Second

// Run streams until interrupted or the timeout passes.
func (m *MonitorCmd) Run(env *Env, c *CLI) error {
	if m.Checkpoint && m.ConsumerGroup == "" {
		return errors.New("--checkpoint needs --consumer-group (e.g. --consumer-group '$Default')")
	}
	if m.Routes && m.ConsumerGroup != "" {
		return errors.New("--routes reads the log before routing, not the built-in endpoint: it takes no --consumer-group")
	}
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
	var cp *client.Checkpointer
	if m.Checkpoint {
		cp = t.client.NewCheckpointer(m.ConsumerGroup)
		stop := m.commitEvery(env, cp)
		defer stop()
	}
	switch {
	case m.JSON:
	case m.Routes:
		fmt.Fprintf(env.Stderr, "Monitoring all messages before routing, from %s (Ctrl-C to stop)...\n", m.From)
	default:
		fmt.Fprintf(env.Stderr, "Monitoring the built-in endpoint %s(Ctrl-C to stop)...\n", m.describe())
	}
	opts := client.ReadOptions{From: m.From, Device: m.Device, ConsumerGroup: m.ConsumerGroup, Resume: m.ConsumerGroup != "" && m.Resume, Raw: m.Routes}
	err = t.client.ReadEvents(ctx, opts, func(ev api.Event) error {
		if timer != nil {
			timer.Reset(m.Timeout)
		}
		var err error
		if m.JSON {
			err = json.NewEncoder(env.Stdout).Encode(ev)
		} else {
			if m.Routes {
				printRoutes(env.Stdout, ev)
			}
			err = printEvent(env.Stdout, ev)
		}
		if err == nil && cp != nil {
			cp.Mark(ev) // only once it is out: a crash before this prints it again, never skips it
		}
		return err
	})
	if errors.Is(context.Cause(ctx), idle) || env.ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the built-in endpoint: %w", err)
	}
	return nil
}

func (m *MonitorCmd) describe() string {
	if m.ConsumerGroup == "" {
		return "from " + m.From + " "
	}
	s := "as consumer group " + m.ConsumerGroup + ", "
	if m.Resume {
		s += "after its checkpoints (elsewhere from " + m.From + ")"
	} else {
		s += "from " + m.From
	}
	if m.Checkpoint {
		s += ", checkpointing"
	}
	return s + " "
}

// commitEvery commits cp every checkpointInterval until the returned stop, which commits once
// more: what was printed before a clean exit is never printed again.
func (m *MonitorCmd) commitEvery(env *Env, cp *client.Checkpointer) (stop func()) {
	// Commits outlive Ctrl-C (which cancels env.ctx) so the last positions are saved.
	ctx := context.WithoutCancel(env.ctx)
	commit := func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := cp.Commit(cctx); err != nil {
			fmt.Fprintln(env.Stderr, "tether: checkpoint:", err)
		}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(checkpointInterval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				commit()
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		commit()
	}
}

// printRoutes writes the routing decision of a message of the raw tap.
func printRoutes(w io.Writer, ev api.Event) {
	routes := "(none: the hub had no routes)"
	if len(ev.Routes) > 0 {
		routes = strings.Join(ev.Routes, ", ")
	} else if len(ev.Endpoints) == 0 || ev.Endpoints[0] != "events" {
		routes = "(none matched)"
	}
	endpoints := "(none: the message went nowhere)"
	if len(ev.Endpoints) > 0 {
		endpoints = strings.Join(ev.Endpoints, ", ")
	}
	fmt.Fprintf(w, "routes: %s -> endpoints: %s\n", routes, endpoints)
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
