package endpoint

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Endpoint types.
const (
	TypeWebhook  = "webhook"
	TypeStorage  = "storage"
	TypeNATS     = "nats"
	TypePostgres = "postgres"
)

// Storage encodings (IoT Hub's spelling; matched case-insensitively).
const (
	EncodingAvro        = "avro"
	EncodingAvroDeflate = "avrodeflate"
	EncodingJSON        = "json"
)

// DefaultFileNameFormat is IoT Hub's default storage blob name format.
const DefaultFileNameFormat = "{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}"

// IoT Hub's storage endpoint limits (spec 8.4).
const (
	DefaultBatchFrequencySeconds = 300
	MinBatchFrequencySeconds     = 60
	MaxBatchFrequencySeconds     = 720
	DefaultMaxChunkSizeBytes     = 314572800
	MinMaxChunkSizeBytes         = 10485760
	MaxMaxChunkSizeBytes         = 524288000
)

// Spec configures one custom endpoint. Exactly the sub-spec named by Type must be set.
type Spec struct {
	// Name is IoT Hub's endpoint name: ^[A-Za-z0-9-._]{1,64}$, not events, fileNotifications or
	// $default, unique (case-insensitively) among the custom endpoints.
	Name string `json:"name" yaml:"name"`
	// Type is "webhook", "storage", "nats" or "postgres".
	Type string `json:"type" yaml:"type"`

	Webhook  *WebhookSpec  `json:"webhook,omitempty" yaml:"webhook,omitempty"`
	Storage  *StorageSpec  `json:"storage,omitempty" yaml:"storage,omitempty"`
	NATS     *NATSSpec     `json:"nats,omitempty" yaml:"nats,omitempty"`
	Postgres *PostgresSpec `json:"postgres,omitempty" yaml:"postgres,omitempty"`

	// Retry tunes the delivery retry backoff; nil means the defaults (1 s doubling to 1 min).
	Retry *RetrySpec `json:"retry,omitempty" yaml:"retry,omitempty"`
}

// RetrySpec tunes the backoff between failed delivery attempts.
type RetrySpec struct {
	// InitialInterval is the wait after the first failure (default 1s); it doubles per failure.
	InitialInterval Duration `json:"initialInterval,omitempty" yaml:"initialInterval,omitempty"`
	// MaxInterval caps the wait (default 1m). A dead endpoint is retried at this interval.
	MaxInterval Duration `json:"maxInterval,omitempty" yaml:"maxInterval,omitempty"`
}

// WebhookSpec delivers messages by HTTP POST.
type WebhookSpec struct {
	// URL is the http or https URL to POST to.
	URL string `json:"url" yaml:"url"`
	// Batch posts up to MaxBatchSize messages per request as a JSON array envelope instead of
	// one message per request with its properties as headers.
	Batch bool `json:"batch,omitempty" yaml:"batch,omitempty"`
	// MaxBatchSize bounds a batch (default 100, at most 1000); ignored unless Batch.
	MaxBatchSize int `json:"maxBatchSize,omitempty" yaml:"maxBatchSize,omitempty"`
	// Secret keys the HMAC-SHA256 signature header X-Tether-Signature: sha256=<hex of the body>.
	// Empty means unsigned. SecretFile reads it from a file instead (trailing newline trimmed).
	Secret     string `json:"secret,omitempty" yaml:"secret,omitempty"`
	SecretFile string `json:"secretFile,omitempty" yaml:"secretFile,omitempty"`
	// Headers are added to every request.
	Headers map[string]string `json:"headers,omitempty" yaml:"headers,omitempty"`
	// Timeout bounds one request (default 30s).
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	CAFile string `json:"caFile,omitempty" yaml:"caFile,omitempty"`
	// InsecureSkipVerify disables TLS certificate verification (testing only).
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty" yaml:"insecureSkipVerify,omitempty"`
}

// StorageSpec writes batches of messages to files, like IoT Hub's storage endpoint.
type StorageSpec struct {
	// Directory is the root the files go under (IoT Hub's container), an absolute path. Created
	// if missing.
	Directory string `json:"directory" yaml:"directory"`
	// FileNameFormat is IoT Hub's fileNameFormat: all of {iothub} {partition} {YYYY} {MM} {DD}
	// {HH} {mm}, in any order. Default DefaultFileNameFormat.
	FileNameFormat string `json:"fileNameFormat,omitempty" yaml:"fileNameFormat,omitempty"`
	// BatchFrequencyInSeconds: 60–720, default 300.
	BatchFrequencyInSeconds int `json:"batchFrequencyInSeconds,omitempty" yaml:"batchFrequencyInSeconds,omitempty"`
	// MaxChunkSizeInBytes: 10485760–524288000, default 314572800.
	MaxChunkSizeInBytes int64 `json:"maxChunkSizeInBytes,omitempty" yaml:"maxChunkSizeInBytes,omitempty"`
	// Encoding: "avro" (default), "avroDeflate" or "json" (case-insensitive).
	Encoding string `json:"encoding,omitempty" yaml:"encoding,omitempty"`
	// BeyondIoTHub lifts IoT Hub's ranges for BatchFrequencyInSeconds (then ≥1) and
	// MaxChunkSizeInBytes (then ≥1): an operator override for tests and small deployments that
	// IoT Hub itself does not allow.
	BeyondIoTHub bool `json:"beyondIoTHub,omitempty" yaml:"beyondIoTHub,omitempty"`
}

// NATSSpec publishes messages to NATS JetStream.
type NATSSpec struct {
	// URL is the server URL (nats://host:port; several comma-separated).
	URL string `json:"url" yaml:"url"`
	// Subject is the subject to publish to, with tokens {iothub}, {endpoint}, {deviceId},
	// {moduleId}, {partition}. Default "tether.{deviceId}".
	Subject string `json:"subject,omitempty" yaml:"subject,omitempty"`
	// Stream, when set, is created if missing, capturing the subject (each segment with a token
	// becomes a "*" wildcard).
	Stream string `json:"stream,omitempty" yaml:"stream,omitempty"`
	// Credentials (all optional).
	CredentialsFile string `json:"credentialsFile,omitempty" yaml:"credentialsFile,omitempty"`
	Token           string `json:"token,omitempty" yaml:"token,omitempty"`
	Username        string `json:"username,omitempty" yaml:"username,omitempty"`
	Password        string `json:"password,omitempty" yaml:"password,omitempty"`
	CAFile          string `json:"caFile,omitempty" yaml:"caFile,omitempty"`
	// MaxBatchSize bounds the publishes in flight before acks are awaited (default 100).
	MaxBatchSize int `json:"maxBatchSize,omitempty" yaml:"maxBatchSize,omitempty"`
	// AckTimeout bounds the wait for JetStream acks (default 10s).
	AckTimeout Duration `json:"ackTimeout,omitempty" yaml:"ackTimeout,omitempty"`
}

// PostgresSpec inserts messages into a PostgreSQL table.
type PostgresSpec struct {
	// ConnectionString is a libpq key/value string or a postgres:// URL.
	ConnectionString string `json:"connectionString" yaml:"connectionString"`
	// Table is the table ([schema.]name, lower-case identifiers) to insert into, created if
	// missing. Default "tether_messages".
	Table string `json:"table,omitempty" yaml:"table,omitempty"`
	// MaxBatchSize bounds the rows inserted per transaction (default 500).
	MaxBatchSize int `json:"maxBatchSize,omitempty" yaml:"maxBatchSize,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("10s", "1m30s") in JSON/YAML.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 10s, 1m30s)", b)
	}
	*d = Duration(v)
	return nil
}

// FieldError is one invalid field of an endpoint spec. Field is a path relative to the spec
// ("name", "webhook.url"); callers embedding the spec prefix their own path.
type FieldError struct {
	Endpoint string
	Field    string
	Message  string
}

func (e *FieldError) Error() string {
	if e.Endpoint == "" {
		return fmt.Sprintf("endpoint: %s: %s", e.Field, e.Message)
	}
	return fmt.Sprintf("endpoint %q: %s: %s", e.Endpoint, e.Field, e.Message)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9\-._]{1,64}$`)

// reservedNames are IoT Hub's reserved endpoint names.
var reservedNames = []string{"events", "fileNotifications", "$default"}

// ValidateName checks an endpoint name against IoT Hub's rules.
func ValidateName(name string) error {
	for _, r := range reservedNames {
		if strings.EqualFold(name, r) {
			return fmt.Errorf("%q is reserved by IoT Hub", name)
		}
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%q must match ^[A-Za-z0-9-._]{1,64}$", name)
	}
	return nil
}

var tableRE = regexp.MustCompile(`^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$`)

var subjectTokens = []string{"{iothub}", "{endpoint}", "{deviceId}", "{moduleId}", "{partition}"}

var fileTokens = []string{"{iothub}", "{partition}", "{YYYY}", "{MM}", "{DD}", "{HH}", "{mm}"}

// Validate checks the spec. The error joins one *FieldError per problem.
func (s Spec) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Endpoint: s.Name, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if err := ValidateName(s.Name); err != nil {
		add("name", "%s", err)
	}
	set := map[string]bool{TypeWebhook: s.Webhook != nil, TypeStorage: s.Storage != nil, TypeNATS: s.NATS != nil, TypePostgres: s.Postgres != nil}
	switch s.Type {
	case TypeWebhook, TypeStorage, TypeNATS, TypePostgres:
		if !set[s.Type] {
			add(s.Type, "required for type %q", s.Type)
		}
	case "":
		add("type", "required: webhook, storage, nats or postgres")
	default:
		add("type", "%q is not one of webhook, storage, nats, postgres", s.Type)
	}
	for _, t := range []string{TypeWebhook, TypeStorage, TypeNATS, TypePostgres} {
		if set[t] && t != s.Type {
			add(t, "set, but type is %q", s.Type)
		}
	}
	if r := s.Retry; r != nil {
		if r.InitialInterval < 0 {
			add("retry.initialInterval", "must not be negative")
		}
		if r.MaxInterval < 0 {
			add("retry.maxInterval", "must not be negative")
		}
		if r.InitialInterval > 0 && r.MaxInterval > 0 && r.MaxInterval < r.InitialInterval {
			add("retry.maxInterval", "must be at least retry.initialInterval")
		}
	}
	if w := s.Webhook; w != nil && s.Type == TypeWebhook {
		u, err := url.Parse(w.URL)
		switch {
		case w.URL == "":
			add("webhook.url", "required")
		case err != nil:
			add("webhook.url", "%v", err)
		case u.Scheme != "http" && u.Scheme != "https":
			add("webhook.url", "scheme must be http or https, not %q", u.Scheme)
		case u.Host == "":
			add("webhook.url", "must have a host")
		}
		if w.MaxBatchSize < 0 || w.MaxBatchSize > 1000 {
			add("webhook.maxBatchSize", "must be between 1 and 1000 (0 means 100)")
		}
		if w.Secret != "" && w.SecretFile != "" {
			add("webhook.secretFile", "set only one of secret and secretFile")
		}
		if w.Timeout < 0 {
			add("webhook.timeout", "must not be negative")
		}
		for k := range w.Headers {
			if !validHeaderName(k) {
				add("webhook.headers", "%q is not a valid HTTP header name", k)
			}
		}
	}
	if st := s.Storage; st != nil && s.Type == TypeStorage {
		switch {
		case st.Directory == "":
			add("storage.directory", "required")
		case !filepath.IsAbs(st.Directory):
			// Relative to what? The hub's working directory is rarely what the author meant.
			add("storage.directory", "must be an absolute path, not %q", st.Directory)
		}
		if f := st.FileNameFormat; f != "" {
			for _, tok := range fileTokens {
				if n := strings.Count(f, tok); n != 1 {
					add("storage.fileNameFormat", "must contain %s exactly once (all of %s are mandatory)", tok, strings.Join(fileTokens, " "))
				}
			}
			if strings.HasPrefix(f, "/") || strings.Contains(f, "..") || strings.Contains(f, `\`) {
				add("storage.fileNameFormat", "must be a relative path without .. or backslashes")
			}
		}
		minF, maxF := MinBatchFrequencySeconds, MaxBatchFrequencySeconds
		minC, maxC := int64(MinMaxChunkSizeBytes), int64(MaxMaxChunkSizeBytes)
		if st.BeyondIoTHub {
			minF, maxF, minC, maxC = 1, 86400, 1, 1<<40
		}
		if v := st.BatchFrequencyInSeconds; v != 0 && (v < minF || v > maxF) {
			add("storage.batchFrequencyInSeconds", "%d is outside %d–%d%s", v, minF, maxF, beyondHint(st.BeyondIoTHub))
		}
		if v := st.MaxChunkSizeInBytes; v != 0 && (v < minC || v > maxC) {
			add("storage.maxChunkSizeInBytes", "%d is outside %d–%d%s", v, minC, maxC, beyondHint(st.BeyondIoTHub))
		}
		switch strings.ToLower(st.Encoding) {
		case "", EncodingAvro, EncodingAvroDeflate, EncodingJSON:
		default:
			add("storage.encoding", "%q is not one of Avro, AvroDeflate, JSON", st.Encoding)
		}
	}
	if n := s.NATS; n != nil && s.Type == TypeNATS {
		if n.URL == "" {
			add("nats.url", "required")
		}
		if n.Subject != "" {
			rest := n.Subject
			for _, tok := range subjectTokens {
				rest = strings.ReplaceAll(rest, tok, "x")
			}
			if strings.ContainsAny(rest, "{}*> \t\r\n") || strings.HasPrefix(rest, ".") || strings.HasSuffix(rest, ".") || strings.Contains(rest, "..") {
				add("nats.subject", "%q is not a valid subject (tokens: %s)", n.Subject, strings.Join(subjectTokens, " "))
			}
		}
		if n.Stream != "" && strings.ContainsAny(n.Stream, ". *>\t\r\n/\\") {
			add("nats.stream", "%q is not a valid stream name", n.Stream)
		}
		if n.MaxBatchSize < 0 || n.MaxBatchSize > 10000 {
			add("nats.maxBatchSize", "must be between 1 and 10000 (0 means 100)")
		}
		if n.AckTimeout < 0 {
			add("nats.ackTimeout", "must not be negative")
		}
		if n.Token != "" && (n.Username != "" || n.CredentialsFile != "") {
			add("nats.token", "set only one of token, username/password and credentialsFile")
		}
	}
	if p := s.Postgres; p != nil && s.Type == TypePostgres {
		if p.ConnectionString == "" {
			add("postgres.connectionString", "required")
		}
		if p.Table != "" && !tableRE.MatchString(p.Table) {
			add("postgres.table", "%q must be [schema.]name of lower-case letters, digits and _", p.Table)
		}
		if p.MaxBatchSize < 0 || p.MaxBatchSize > 10000 {
			add("postgres.maxBatchSize", "must be between 1 and 10000 (0 means 500)")
		}
	}
	return errors.Join(errs...)
}

func beyondHint(beyond bool) string {
	if beyond {
		return ""
	}
	return " (IoT Hub's range; set storage.beyondIoTHub to lift it)"
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// ValidateAll validates every spec and that names are unique (case-insensitively, like IoT Hub
// endpoint names across types).
func ValidateAll(specs []Spec) error {
	var errs []error
	seen := map[string]string{}
	for i, s := range specs {
		if err := s.Validate(); err != nil {
			errs = append(errs, err)
		}
		k := strings.ToLower(s.Name)
		if prev, ok := seen[k]; ok {
			errs = append(errs, &FieldError{Endpoint: s.Name, Field: fmt.Sprintf("[%d].name", i), Message: fmt.Sprintf("duplicate of endpoint %q", prev)})
		}
		seen[k] = s.Name
	}
	return errors.Join(errs...)
}
