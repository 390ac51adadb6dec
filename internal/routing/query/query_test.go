package query

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/tetherhub/tether/internal/message"
)

// fixture is a message in testdata/messages.json.
type fixture struct {
	Message message.Message `json:"message"`
	Body    json.RawMessage `json:"body"`   // a JSON body, encoded as Encode says
	Text    *string         `json:"text"`   // a body given as text, encoded as Encode says
	Base64  string          `json:"base64"` // a body given as raw bytes
	Encode  string          `json:"encode"` // utf-8 (default), utf-16le, utf-16be-bom, utf-32le
	Twin    map[string]any  `json:"twin"`
}

func loadFixtures(t testing.TB) map[string]Input {
	t.Helper()
	data, err := os.ReadFile("testdata/messages.json")
	if err != nil {
		t.Fatal(err)
	}
	var fs map[string]*fixture
	if err := json.Unmarshal(data, &fs); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]Input, len(fs))
	for name, f := range fs {
		m := f.Message
		switch {
		case f.Base64 != "":
			if m.Body, err = base64.StdEncoding.DecodeString(f.Base64); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		case f.Text != nil:
			m.Body = encodeText(t, *f.Text, f.Encode)
		case f.Body != nil:
			m.Body = encodeText(t, string(f.Body), f.Encode)
		}
		var twin TwinSource
		if f.Twin != nil {
			twin = TwinDocument(f.Twin)
		}
		out[name] = MessageInput(&m, twin)
	}
	return out
}

func encodeText(t testing.TB, s, enc string) []byte {
	u := utf16.Encode([]rune(s))
	switch enc {
	case "", "utf-8":
		return []byte(s)
	case "utf-16le":
		return appendUTF16(nil, u, binary.LittleEndian)
	case "utf-16be-bom":
		return appendUTF16([]byte{0xFE, 0xFF}, u, binary.BigEndian)
	case "utf-32le":
		var b []byte
		for _, r := range s {
			b = binary.LittleEndian.AppendUint32(b, uint32(r))
		}
		return b
	}
	t.Fatalf("unknown encoding %q", enc)
	return nil
}

func appendUTF16(b []byte, u []uint16, order binary.AppendByteOrder) []byte {
	for _, c := range u {
		b = order.AppendUint16(b, c)
	}
	return b
}

// conformanceCase is one line of testdata/conformance.txt: "condition ==> expected", evaluated
// against the fixture named by the last "@fixture name" line. expected is Value.String().
type conformanceCase struct {
	line      int
	fixture   string
	condition string
	want      string
}

func loadConformance(t testing.TB) []conformanceCase {
	t.Helper()
	f, err := os.Open("testdata/conformance.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []conformanceCase
	fixture := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "@fixture "):
			fixture = strings.TrimSpace(strings.TrimPrefix(line, "@fixture "))
			continue
		}
		i := strings.LastIndex(line, " ==> ")
		if i < 0 {
			t.Fatalf("conformance.txt:%d: no ' ==> ' in %q", n, line)
		}
		cases = append(cases, conformanceCase{n, fixture, strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+5:])})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

func TestConformance(t *testing.T) {
	inputs := loadFixtures(t)
	cases := loadConformance(t)
	if len(cases) < 150 {
		t.Errorf("conformance.txt has %d cases, want at least 150", len(cases))
	}
	for _, c := range cases {
		in, ok := inputs[c.fixture]
		if !ok {
			t.Fatalf("conformance.txt:%d: unknown fixture %q", c.line, c.fixture)
		}
		q, err := Compile(c.condition)
		if err != nil {
			t.Errorf("conformance.txt:%d: Compile(%q): %v", c.line, c.condition, err)
			continue
		}
		got := q.Eval(in)
		if got.String() != c.want {
			t.Errorf("conformance.txt:%d: [%s] %s\n got  %s\n want %s", c.line, c.fixture, c.condition, got, c.want)
		}
		if q.Matches(in) != (c.want == "true") {
			t.Errorf("conformance.txt:%d: Matches = %v for result %s", c.line, q.Matches(in), got)
		}
		if e := q.Explain(in); e.Result.String() != got.String() {
			t.Errorf("conformance.txt:%d: Explain result %s, Eval %s", c.line, e.Result, got)
		}
	}
}

// TestSyntaxErrors checks testdata/errors.txt: "condition ==> error message".
func TestSyntaxErrors(t *testing.T) {
	data, err := os.ReadFile("testdata/errors.txt")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		j := strings.LastIndex(line, " ==> ")
		if j < 0 {
			t.Fatalf("errors.txt:%d: no ' ==> '", i+1)
		}
		src, want := line[:j], line[j+5:]
		src = strings.ReplaceAll(src, `\n`, "\n")
		n++
		_, err := Compile(src)
		if err == nil {
			t.Errorf("errors.txt:%d: Compile(%q) succeeded, want %q", i+1, src, want)
			continue
		}
		if err.Error() != want {
			t.Errorf("errors.txt:%d: Compile(%q)\n got  %s\n want %s", i+1, src, err, want)
		}
		var se *SyntaxError
		if !errors.As(err, &se) || !errors.Is(err, ErrSyntax) {
			t.Errorf("errors.txt:%d: %v is not a *SyntaxError matching ErrSyntax", i+1, err)
		}
	}
	if n < 30 {
		t.Errorf("errors.txt has %d cases, want at least 30", n)
	}
}
