package endpoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS defaults.
const (
	defaultNATSSubject = "tether.{deviceId}"
	defaultNATSBatch   = 100
	defaultNATSAck     = 10 * time.Second
)

// natsSink publishes to JetStream with acks. Each message carries Nats-Msg-Id =
// endpoint/partition/sequence, so JetStream drops a redelivery (after a crash or a failed
// batch) within the stream's duplicate window (2 minutes by default).
type natsSink struct {
	name    string
	hub     string
	spec    NATSSpec
	subject string
	ackWait time.Duration
	opts    []nats.Option

	mu     sync.Mutex
	nc     *nats.Conn
	js     jetstream.JetStream
	stream bool // stream ensured
}

func newNATSSink(s Spec, env sinkEnv) (Sink, batchLimits, error) {
	n := *s.NATS
	ns := &natsSink{name: s.Name, hub: env.hub, spec: n, subject: n.Subject, ackWait: time.Duration(n.AckTimeout)}
	if ns.subject == "" {
		ns.subject = defaultNATSSubject
	}
	if ns.ackWait == 0 {
		ns.ackWait = defaultNATSAck
	}
	ns.opts = []nats.Option{
		nats.Name("tether endpoint " + s.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.Timeout(5 * time.Second),
	}
	switch {
	case n.CredentialsFile != "":
		if _, err := os.Stat(n.CredentialsFile); err != nil {
			return nil, batchLimits{}, &FieldError{Endpoint: s.Name, Field: "nats.credentialsFile", Message: err.Error()}
		}
		ns.opts = append(ns.opts, nats.UserCredentials(n.CredentialsFile))
	case n.Token != "":
		ns.opts = append(ns.opts, nats.Token(n.Token))
	case n.Username != "":
		ns.opts = append(ns.opts, nats.UserInfo(n.Username, n.Password))
	}
	if n.CAFile != "" {
		pem, err := os.ReadFile(n.CAFile)
		if err != nil {
			return nil, batchLimits{}, &FieldError{Endpoint: s.Name, Field: "nats.caFile", Message: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, batchLimits{}, &FieldError{Endpoint: s.Name, Field: "nats.caFile", Message: "no PEM certificates in " + n.CAFile}
		}
		ns.opts = append(ns.opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}))
	}
	batch := n.MaxBatchSize
	if batch == 0 {
		batch = defaultNATSBatch
	}
	return ns, batchLimits{records: batch, bytes: 8 << 20}, nil
}

// conn connects on first use (and after the connection was closed).
func (s *natsSink) conn(ctx context.Context) (jetstream.JetStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc == nil || s.nc.IsClosed() {
		nc, err := nats.Connect(s.spec.URL, s.opts...)
		if err != nil {
			return nil, fmt.Errorf("nats: connect %s: %w", s.spec.URL, err)
		}
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*defaultNATSBatch))
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("nats: %w", err)
		}
		s.nc, s.js, s.stream = nc, js, false
	}
	if s.spec.Stream != "" && !s.stream {
		ctx, cancel := context.WithTimeout(ctx, s.ackWait)
		defer cancel()
		_, err := s.js.Stream(ctx, s.spec.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = s.js.CreateStream(ctx, jetstream.StreamConfig{Name: s.spec.Stream, Subjects: []string{streamSubject(s.subject)}})
		}
		if err != nil {
			return nil, fmt.Errorf("nats: stream %s: %w", s.spec.Stream, err)
		}
		s.stream = true
	}
	return s.js, nil
}

// streamSubject is the subject filter capturing every subject the template renders.
func streamSubject(tmpl string) string {
	parts := strings.Split(tmpl, ".")
	for i, p := range parts {
		if strings.Contains(p, "{") {
			parts[i] = "*"
		}
	}
	return strings.Join(parts, ".")
}

// subjectToken makes a value usable as one subject token: characters NATS does not allow in a
// token ('.', '*', '>', whitespace, controls) become '_'; empty becomes "_".
func subjectToken(v string) string {
	if v == "" {
		return "_"
	}
	b := []byte(v)
	for i, c := range b {
		if c <= ' ' || c == '.' || c == '*' || c == '>' || c == 0x7f {
			b[i] = '_'
		}
	}
	return string(b)
}

func (s *natsSink) renderSubject(d Delivery) string {
	m := d.Message
	return strings.NewReplacer(
		"{iothub}", subjectToken(s.hub),
		"{endpoint}", subjectToken(s.name),
		"{deviceId}", subjectToken(m.ConnectionDeviceID),
		"{moduleId}", subjectToken(m.ConnectionModuleID),
		"{partition}", strconv.Itoa(d.Partition),
	).Replace(s.subject)
}

func (s *natsSink) Deliver(ctx context.Context, batch []Delivery) error {
	js, err := s.conn(ctx)
	if err != nil {
		return err
	}
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	var pubErr error
	for _, d := range batch {
		msg := nats.NewMsg(s.renderSubject(d))
		for _, p := range headerPairs(d.Message) {
			msg.Header[p.Name] = []string{p.Value}
		}
		msg.Header[jetstream.MsgIDHeader] = []string{deliveryID(s.name, d)}
		msg.Header[HeaderEndpoint] = []string{s.name}
		msg.Header[HeaderPartition] = []string{strconv.Itoa(d.Partition)}
		msg.Header[HeaderSequenceNumber] = []string{strconv.FormatInt(d.Sequence, 10)}
		if s.hub != "" {
			msg.Header[HeaderHub] = []string{s.hub}
		}
		msg.Data = d.Message.Body
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			pubErr = err
			break
		}
		futures = append(futures, f)
	}
	timer := time.NewTimer(s.ackWait)
	defer timer.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return &PartialError{Done: i, Err: fmt.Errorf("nats: publish: %w", err)}
		case <-timer.C:
			return &PartialError{Done: i, Err: fmt.Errorf("nats: no ack within %v", s.ackWait)}
		case <-ctx.Done():
			return &PartialError{Done: i, Err: ctx.Err()}
		}
	}
	if pubErr != nil {
		return &PartialError{Done: len(futures), Err: fmt.Errorf("nats: publish: %w", pubErr)}
	}
	return nil
}

func (s *natsSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc != nil {
		s.nc.Close()
		s.nc = nil
	}
	return nil
}
