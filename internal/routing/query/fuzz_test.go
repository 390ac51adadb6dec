package query

import (
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/tetherhub/tether/internal/message"
)

// FuzzCompile checks that Compile never panics, that its errors are well-formed SyntaxErrors,
// and that whatever compiles evaluates and explains without panicking.
func FuzzCompile(f *testing.F) {
	f.Add("$contentEncoding = 'UTF-8' AND processingPath = 'hot'")
	f.Add("length($body.Weather.Location.State) = 2")
	in := loadFixtures(f)["weather"]
	f.Fuzz(func(t *testing.T, src string) {
		q, err := Compile(src)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, ErrSyntax) {
				t.Fatalf("Compile(%q) = %v, not a *SyntaxError", src, err)
			}
			if se.Column < 1 || se.Line < 1 || se.Offset < 0 || se.Offset > len(src) {
				t.Fatalf("Compile(%q): bad position %+v", src, *se)
			}
			return
		}
		v := q.Eval(in)
		if v.Kind() > Array {
			t.Fatalf("Eval(%q) has kind %d", src, v.Kind())
		}
		if q.Matches(in) != v.IsTrue() {
			t.Fatalf("Matches and Eval disagree on %q", src)
		}
		e := q.Explain(in)
		if e.Result.String() != v.String() {
			t.Fatalf("Explain(%q) = %v, Eval = %v", src, e.Result, v)
		}
		if s := v.String(); !utf8.ValidString(s) && utf8.ValidString(src) {
			t.Fatalf("String() of %q is not UTF-8: %q", src, s)
		}
	})
}

// FuzzEval evaluates body and property queries on fuzzed messages: any content type,
// encoding and body bytes.
func FuzzEval(f *testing.F) {
	f.Add("application/json", "utf-8", []byte(`{"a":{"b":[1,{"c":"x"}]}}`))
	f.Add("application/json", "utf-16", []byte{'{', 0, '}', 0})
	f.Add("application/json", "utf-32", []byte{0xFF, 0xFE, 0, 0, '[', 0, 0, 0, ']', 0, 0, 0})
	queries := []*Query{
		MustCompile("$body.a.b[1].c = 'x'"),
		MustCompile("is_defined($body.a) OR length($body.s) > 2 AND $body.n * 2 >= as_number($contentType)"),
		MustCompile("substring($body.s, $body.n, 3) = 'x' OR index_of($body.s, 'q') = 1"),
		MustCompile("$body.a IN [1, 'x', null] OR concat($body.s, $contentEncoding) = 'y'"),
		MustCompile("upper($body.s) = lower($body.s) AND $body[0] = 1 OR $body.a.b[0] NIN [true]"),
	}
	f.Fuzz(func(t *testing.T, ct, ce string, body []byte) {
		m := &message.Message{ContentType: ct, ContentEncoding: ce, Body: body,
			Properties: map[string]string{ct: ce}}
		in := MessageInput(m, nil)
		for _, q := range queries {
			v := q.Eval(in)
			if q.Matches(in) != v.IsTrue() {
				t.Fatalf("Matches and Eval disagree on %s", q)
			}
			q.Explain(in)
		}
	})
}
