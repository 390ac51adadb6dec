package query

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/message"
)

func TestSyntaxErrorFields(t *testing.T) {
	_, err := Compile("a = 1\n  AND (b = 'é'")
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want *SyntaxError", err)
	}
	want := SyntaxError{Line: 2, Column: 15, Offset: 21, Expected: "')'", Found: "end of input"}
	if se.Line != want.Line || se.Column != want.Column || se.Offset != want.Offset ||
		se.Expected != want.Expected || se.Found != want.Found {
		t.Fatalf("got %+v, want %+v", *se, want)
	}
	if got := se.Error(); got != "line 2, column 15: expected ')' but found end of input" {
		t.Fatalf("Error() = %q", got)
	}
}

func TestErrorKinds(t *testing.T) {
	tests := []struct {
		src  string
		kind error
	}{
		{"", ErrSyntax},
		{"   ", ErrSyntax},
		{"ROUND(1)", ErrUnknownFunction},
		{"length('a', 'b')", ErrArgumentCount},
		{"a = ", ErrSyntax},
	}
	for _, tt := range tests {
		_, err := Compile(tt.src)
		if !errors.Is(err, tt.kind) || !errors.Is(err, ErrSyntax) {
			t.Errorf("Compile(%q) = %v, want %v", tt.src, err, tt.kind)
		}
	}
	if _, err := Compile("a = 1"); errors.Is(err, ErrSyntax) {
		t.Fatal("valid query failed")
	}
}

// recordingInput is an Input that is not a *messageInput, to exercise the interface path.
type recordingInput struct {
	sys, app map[string]string
	asked    []string
}

func (r *recordingInput) SystemProperty(name string) (string, bool) {
	r.asked = append(r.asked, "sys:"+name)
	v, ok := r.sys[name]
	return v, ok
}

func (r *recordingInput) AppProperty(name string) (string, bool) {
	r.asked = append(r.asked, "app:"+name)
	v, ok := r.app[name]
	return v, ok
}

func (r *recordingInput) Body() (any, bool)         { return map[string]any{"t": 1.0}, true }
func (r *recordingInput) Twin([]string) (any, bool) { return nil, false }

func TestCustomInput(t *testing.T) {
	in := &recordingInput{sys: map[string]string{"dt-subject": "c1"}, app: map[string]string{"$x": "y"}}
	q := MustCompile("$DT-SUBJECT = 'c1' AND $x = 'y' AND $contentType = 'z' AND $body.t = 1")
	if got := q.Eval(in); got.String() != "undefined" {
		t.Fatalf("Eval = %v", got)
	}
	want := "sys:dt-subject app:$x sys:contentType app:$contentType"
	if got := strings.Join(in.asked, " "); got != want {
		t.Fatalf("lookups = %q, want %q", got, want)
	}
}

func TestShortCircuit(t *testing.T) {
	in := &recordingInput{app: map[string]string{"a": "z"}}
	MustCompile("a = 'x' AND b = 'y'").Eval(in)
	if len(in.asked) != 1 {
		t.Fatalf("AND evaluated past a false operand: %v", in.asked)
	}
}

func TestExplain(t *testing.T) {
	inputs := loadFixtures(t)
	tests := []struct {
		fixture, src string
		want         []string
	}{
		{"text-body", "$body.Weather.Temperature > 40",
			[]string{`$body.Weather.Temperature is undefined: the message's contentType is "text/plain", not application/json`,
				"the condition evaluates to undefined, not a Boolean, so the route does not match"}},
		{"gzip", "$body.Weather.Temperature > 40 OR true",
			[]string{`$body.Weather.Temperature is undefined: the message's contentEncoding is "gzip", not utf-8, utf-16 or utf-32`}},
		{"weather", "severity = 2",
			[]string{"severity = 2 is undefined: it compares a string with a number; application properties are strings: use as_number(severity)",
				"the condition evaluates to undefined, not a Boolean, so the route does not match"}},
		{"weather", "nope = 'x' OR $nope = 'y' OR $connectionModuleId = 'm'",
			[]string{`nope is undefined: the message has no application property "nope"`,
				`$nope is undefined: it is not a system property keyword, and the message has no application property "$nope"`,
				"$connectionModuleId is undefined: the message has no iothub-connection-module-id system property",
				"the condition evaluates to undefined, not a Boolean, so the route does not match"}},
		{"weather", "$body.weather.temperature = 50 OR $body[0] = 1",
			[]string{"$body.weather.temperature is undefined: the body has no value at this path (body paths are case-sensitive)",
				"$body[0] is undefined: conditions can query properties inside the body, not the whole body",
				"the condition evaluates to undefined, not a Boolean, so the route does not match"}},
		{"empty", "$twin.tags.floor = 1 OR false",
			[]string{"$twin.tags.floor is undefined: no twin is available for this message",
				"the condition evaluates to undefined, not a Boolean, so the route does not match"}},
		{"weather", "length(5) = 1 OR processingPath AND true",
			[]string{"length(5) is undefined: LENGTH does not accept a number",
				`processingPath is "hot", not a Boolean, so it counts as undefined`,
				"the condition evaluates to undefined, not a Boolean, so the route does not match"}},
		{"weather", "processingPath = 'hot'", nil},
	}
	for _, tt := range tests {
		e := MustCompile(tt.src).Explain(inputs[tt.fixture])
		if strings.Join(e.Notes, "\n") != strings.Join(tt.want, "\n") {
			t.Errorf("Explain(%q) on %s:\n got  %q\n want %q", tt.src, tt.fixture, e.Notes, tt.want)
		}
	}
	e := MustCompile("missing = 'x'").Explain(inputs["empty"])
	if !strings.HasPrefix(e.String(), "undefined\n- missing is undefined") {
		t.Errorf("String() = %q", e.String())
	}
}

func TestRouteResult(t *testing.T) {
	for src, want := range map[string]string{
		"true": "true", "false": "false", "undefined": "undefined", "null": "undefined",
		"1": "undefined", "'true'": "undefined", "[true]": "undefined",
	} {
		if got := MustCompile(src).Eval(nil).RouteResult(); got != want {
			t.Errorf("%s: RouteResult = %q, want %q", src, got, want)
		}
	}
}

func TestValueOf(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{nil, "null"}, {true, "true"}, {1.5, "1.5"}, {3, "3"}, {int64(-2), "-2"}, {"s", `"s"`},
		{[]any{1.0, "a"}, `[1,"a"]`}, {map[string]any{"b": 1.0, "a": nil}, `{"a":null,"b":1}`},
		{struct{}{}, "undefined"}, {math.Inf(1), "undefined"}, {1e21, "1e+21"},
	}
	for _, tt := range tests {
		if got := ValueOf(tt.in).String(); got != tt.want {
			t.Errorf("ValueOf(%#v) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestDecodeBody(t *testing.T) {
	tests := []struct {
		ct, ce string
		body   []byte
		want   string // "" for success
	}{
		{"application/json", "utf-8", []byte(`{"a":1}`), ""},
		{"Application/Json", "UTF-8", []byte("\xef\xbb\xbf{\"a\":1}"), ""},
		{"application/json", "utf-16", []byte{'{', 0, '}', 0}, ""},
		{"application/json", "utf-16", []byte{0xFE, 0xFF, 0, '{', 0, '}'}, ""},
		{"application/json", "utf-16", []byte{0x3D, 0xD8, '{', 0}, "the body is not valid UTF-16"},
		{"application/json", "utf-32", []byte{0, 0, 0xFE, 0xFF, 0, 0, 0, '{', 0, 0, 0, '}'}, ""},
		{"application/json", "utf-32", []byte{0, 0, 0x11, 0}, "the body is not valid UTF-32"},
		{"application/json", "utf-8", []byte("{\"a\":\"\xff\"}"), "the body is not valid UTF-8"},
		{"application/json", "utf8", []byte(`{}`), `the message's contentEncoding is "utf8", not utf-8, utf-16 or utf-32`},
		{"", "utf-8", []byte(`{}`), "the message has no contentType (body queries need application/json)"},
		{"application/json", "", []byte(`{}`), "the message has no contentEncoding (body queries need utf-8, utf-16 or utf-32)"},
		{"application/json", "utf-8", nil, "the body is not valid JSON"},
	}
	for _, tt := range tests {
		_, why := DecodeBody(tt.ct, tt.ce, tt.body)
		if why != tt.want {
			t.Errorf("DecodeBody(%q, %q, %q) = %q, want %q", tt.ct, tt.ce, tt.body, why, tt.want)
		}
	}
}

func TestEnqueuedTimeFormat(t *testing.T) {
	m := &message.Message{EnqueuedTime: time.Date(2022, 6, 6, 22, 56, 6, 120000000, time.FixedZone("x", 3600))}
	in := MessageInput(m, nil)
	if got := MustCompile("$enqueuedTime").Eval(in).String(); got != `"2022-06-06T21:56:06.1200000Z"` {
		t.Fatalf("$enqueuedTime = %s", got)
	}
	if !MustCompile(`$enqueuedTime > "2022-06-06T21:56:05Z" AND $enqueuedTime < "2022-06-06T21:56:07Z"`).Matches(in) {
		t.Fatal("ISO 8601 string comparison failed")
	}
}

func TestMultilineAndWhitespace(t *testing.T) {
	m := &message.Message{ContentEncoding: "UTF-8", Properties: map[string]string{"processingPath": "hot"}}
	q := MustCompile("\t$contentEncoding = 'UTF-8'\r\n\tAND processingPath = 'hot'\n")
	if !q.Matches(MessageInput(m, nil)) {
		t.Fatal("multi-line condition did not match")
	}
	if q.String() == "" {
		t.Fatal("String() lost the source")
	}
}

// TestNoAllocs pins the promise that property comparisons do not allocate.
func TestNoAllocs(t *testing.T) {
	in := MessageInput(benchMessage(), nil)
	for _, src := range []string{
		fourClause,
		"$connectionDeviceId = 'dev-1' OR $connectionModuleId = 'm'",
		"processingPath IN ['cold', 'hot'] AND NOT severity = '9'",
	} {
		q := MustCompile(src)
		if !q.Matches(in) {
			t.Fatalf("%s does not match the benchmark message", src)
		}
		if n := testing.AllocsPerRun(100, func() { q.Matches(in) }); n != 0 {
			t.Errorf("%s: %v allocations per evaluation, want 0", src, n)
		}
	}
}

func TestConcurrentEval(t *testing.T) {
	inputs := loadFixtures(t)
	q := MustCompile("$body.Weather.Temperature = 50 AND processingPath = 'hot' AND $twin.tags.deploymentLocation.floor = 1")
	in := inputs["weather"]
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if !q.Matches(in) {
					t.Error("no match")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestDeepNesting(t *testing.T) {
	src := strings.Repeat("(", 10000) + "1" + strings.Repeat(")", 10000)
	if _, err := Compile(src); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Fatalf("err = %v", err)
	}
	src = strings.Repeat("NOT ", 150) + "true"
	if v := MustCompile(src).Eval(nil); v.String() != "true" {
		t.Fatalf("150 NOTs = %v", v)
	}
}
