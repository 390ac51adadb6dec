package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Fixed test keys: 32 bytes of 0x01.. and 0x81.. in standard base64.
var (
	keyA = testKey(0x01)
	keyB = testKey(0x81)
	keyC = testKey(0x41)
)

func testKey(start byte) string {
	var b [32]byte
	for i := range b {
		b[i] = start + byte(i)
	}
	return base64.StdEncoding.EncodeToString(b[:])
}

// goldenSig computes a signature independently of the code under test.
func goldenSig(key, sr, se string) string {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		panic(err)
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(sr + "\n" + se))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// tok builds a token with the parameters in the given order; sig is
// computed over sr and se as given.
func tok(key, sr, se, skn, order string) string {
	sig := url.QueryEscape(goldenSig(key, sr, se))
	vals := map[string]string{"sr": sr, "sig": sig, "se": se, "skn": skn}
	var parts []string
	for k := range strings.SplitSeq(order, ",") {
		if k == "skn" && skn == "" {
			continue
		}
		parts = append(parts, k+"="+vals[k])
	}
	return "SharedAccessSignature " + strings.Join(parts, "&")
}

const (
	nodeOrder = "sr,sig,skn,se"
	netOrder  = "sr,sig,se,skn"
	sknFirst  = "skn,se,sig,sr"
)

var (
	testExpiry = time.Unix(1795615865, 0).UTC()
	testSE     = strconv.FormatInt(testExpiry.Unix(), 10)
	beforeExp  = testExpiry.Add(-time.Second)
)

func TestParseToken(t *testing.T) {
	captured := "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=ncIsSWyiSemdhWNR5RNnOOI7Z9AfnK52hJTri9fyQNA%3D&se=1795615865"
	tests := []struct {
		name    string
		in      string
		want    Token // only exported fields compared
		decoded string
		wantErr bool
	}{
		{
			name:    "captured node device token",
			in:      captured,
			want:    Token{Resource: "localhost%2Fdevices%2Fdev1", Signature: "ncIsSWyiSemdhWNR5RNnOOI7Z9AfnK52hJTri9fyQNA=", Expiry: testExpiry},
			decoded: "localhost/devices/dev1",
		},
		{
			name:    "node policy order sr,sig,skn,se",
			in:      "SharedAccessSignature sr=localhost&sig=rl1gCF5HsywduPQUfVznl3I0QqD4USqs7JPxIzxuUnE%3D&skn=iothubowner&se=1795615677",
			want:    Token{Resource: "localhost", Signature: "rl1gCF5HsywduPQUfVznl3I0QqD4USqs7JPxIzxuUnE=", Expiry: time.Unix(1795615677, 0).UTC(), KeyName: "iothubowner"},
			decoded: "localhost",
		},
		{
			name:    "doc order sig,se,skn,sr with port and lower-case escapes",
			in:      "SharedAccessSignature sig=abc%2b%2f%3d&se=10&skn=my%20policy&sr=localhost%3a18883%2fdevices%2fd1",
			want:    Token{Resource: "localhost%3a18883%2fdevices%2fd1", Signature: "abc+/=", Expiry: time.Unix(10, 0).UTC(), KeyName: "my policy"},
			decoded: "localhost:18883/devices/d1",
		},
		{
			name:    "plus stays plus, unknown parameter ignored",
			in:      "SharedAccessSignature sr=h%2Fdevices%2Fa+b&sig=x+y&se=1&foo=bar",
			want:    Token{Resource: "h%2Fdevices%2Fa+b", Signature: "x+y", Expiry: time.Unix(1, 0).UTC()},
			decoded: "h/devices/a+b",
		},
		{name: "no prefix", in: "sr=a&sig=b&se=1", wantErr: true},
		{name: "prefix glued", in: "SharedAccessSignaturesr=a&sig=b&se=1", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "prefix only", in: "SharedAccessSignature ", wantErr: true},
		{name: "missing sr", in: "SharedAccessSignature sig=b&se=1", wantErr: true},
		{name: "missing sig", in: "SharedAccessSignature sr=a&se=1", wantErr: true},
		{name: "missing se", in: "SharedAccessSignature sr=a&sig=b", wantErr: true},
		{name: "duplicate sr", in: "SharedAccessSignature sr=a&sig=b&se=1&sr=c", wantErr: true},
		{name: "duplicate skn", in: "SharedAccessSignature skn=x&sr=a&sig=b&se=1&skn=x", wantErr: true},
		{name: "non-numeric se", in: "SharedAccessSignature sr=a&sig=b&se=12x", wantErr: true},
		{name: "negative se", in: "SharedAccessSignature sr=a&sig=b&se=-1", wantErr: true},
		{name: "fractional se", in: "SharedAccessSignature sr=a&sig=b&se=1.5", wantErr: true},
		{name: "overflowing se", in: "SharedAccessSignature sr=a&sig=b&se=99999999999999999999", wantErr: true},
		{name: "empty sig", in: "SharedAccessSignature sr=a&sig=&se=1", wantErr: true},
		{name: "bad escape in sr", in: "SharedAccessSignature sr=a%2&sig=b&se=1", wantErr: true},
		{name: "bad escape in sig", in: "SharedAccessSignature sr=a&sig=b%zz&se=1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseToken(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformedToken) || !errors.Is(err, ErrUnauthorized) {
					t.Fatalf("ParseToken(%q) err = %v, want ErrMalformedToken and ErrUnauthorized", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseToken(%q): %v", tt.in, err)
			}
			if got.Resource != tt.want.Resource || got.Signature != tt.want.Signature ||
				!got.Expiry.Equal(tt.want.Expiry) || got.KeyName != tt.want.KeyName {
				t.Errorf("ParseToken(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if d := got.DecodedResource(); d != tt.decoded {
				t.Errorf("DecodedResource() = %q, want %q", d, tt.decoded)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	const sr = "myhub.example%2Fdevices%2Fdev1"
	tests := []struct {
		name  string
		token string
		key   string
		now   time.Time
		want  error // nil, ErrExpired or ErrBadSignature
	}{
		{"node order", tok(keyA, sr, testSE, "", nodeOrder), keyA, beforeExp, nil},
		{".NET order with skn", tok(keyA, sr, testSE, "device", netOrder), keyA, beforeExp, nil},
		{"skn first", tok(keyA, sr, testSE, "device", sknFirst), keyA, beforeExp, nil},
		{"C SDK lower-case escapes", tok(keyA, "myhub.example%2fdevices%2fdev1", testSE, "", netOrder), keyA, beforeExp, nil},
		{"signed canonical, sent mixed case", canonicalSigned(keyA, "MyHub.Example%2Fdevices%2FDev1"), keyA, beforeExp, nil},
		{"wrong key", tok(keyA, sr, testSE, "", nodeOrder), keyB, beforeExp, ErrBadSignature},
		{"expired exactly at se", tok(keyA, sr, testSE, "", nodeOrder), keyA, testExpiry, ErrExpired},
		{"expired after se", tok(keyA, sr, testSE, "", nodeOrder), keyA, testExpiry.Add(time.Hour), ErrExpired},
		{"sr altered after signing", strings.Replace(tok(keyA, sr, testSE, "", nodeOrder), "dev1", "dev2", 1), keyA, beforeExp, ErrBadSignature},
		{"se altered after signing", strings.Replace(tok(keyA, sr, testSE, "", nodeOrder), "se="+testSE, "se=1895615865", 1), keyA, beforeExp, ErrBadSignature},
		{"se leading zero is signed as sent", tok(keyA, sr, "0"+testSE, "", nodeOrder), keyA, beforeExp, nil},
		{"short signature", "SharedAccessSignature sr=" + sr + "&sig=AAAA&se=" + testSE, keyA, beforeExp, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk, err := ParseToken(tt.token)
			if err != nil {
				t.Fatalf("ParseToken(%q): %v", tt.token, err)
			}
			err = tk.Verify(tt.key, tt.now)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			if err != nil && !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Verify error %v does not match ErrUnauthorized", err)
			}
		})
	}
}

// canonicalSigned sends sr as given but signs the doc's canonical form.
func canonicalSigned(key, sr string) string {
	canon := strings.ToLower(sr)
	sig := url.QueryEscape(goldenSig(key, canon, testSE))
	return "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + testSE
}

func TestVerifyBadKey(t *testing.T) {
	tk, err := ParseToken(tok(keyA, "h", testSE, "", nodeOrder))
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Verify("not base64!", beforeExp); err == nil {
		t.Fatal("Verify with an invalid key succeeded")
	}
}

func TestSign(t *testing.T) {
	tests := []struct {
		name, uri, skn, want string
	}{
		{
			name: "device token like the node SDK",
			uri:  "localhost/devices/dev1",
			want: "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=" + url.QueryEscape(goldenSig(keyA, "localhost%2Fdevices%2Fdev1", testSE)) + "&se=" + testSE,
		},
		{
			name: "policy token puts skn before se",
			uri:  "localhost:18883/devices",
			skn:  "device",
			want: "SharedAccessSignature sr=localhost%3A18883%2Fdevices&sig=" + url.QueryEscape(goldenSig(keyA, "localhost%3A18883%2Fdevices", testSE)) + "&skn=device&se=" + testSE,
		},
		{
			name: "strict encoding of !'()*",
			uri:  "h/devices/a!'()*+b",
			want: "SharedAccessSignature sr=h%2Fdevices%2Fa%21%27%28%29%2A%2Bb&sig=" + url.QueryEscape(goldenSig(keyA, "h%2Fdevices%2Fa%21%27%28%29%2A%2Bb", testSE)) + "&se=" + testSE,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Sign(tt.uri, tt.skn, keyA, testExpiry)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Sign =\n %s\nwant\n %s", got, tt.want)
			}
			tk, err := ParseToken(got)
			if err != nil {
				t.Fatal(err)
			}
			if err := tk.Verify(keyA, beforeExp); err != nil {
				t.Fatalf("Verify(Sign()) = %v", err)
			}
			if tk.DecodedResource() != tt.uri || tk.KeyName != tt.skn {
				t.Fatalf("round trip = %q %q", tk.DecodedResource(), tk.KeyName)
			}
		})
	}
	if _, err := Sign("h", "", "%%%", testExpiry); err == nil {
		t.Error("Sign with a non-base64 key succeeded")
	}
	if _, err := Sign("", "", keyA, testExpiry); err == nil {
		t.Error("Sign with an empty URI succeeded")
	}
}

func TestTokenStringRoundTrip(t *testing.T) {
	in := tok(keyA, "h%2fdevices%2fd1", testSE, "my policy", sknFirst)
	t1, err := ParseToken(in)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := ParseToken(t1.String())
	if err != nil {
		t.Fatal(err)
	}
	if t1 != t2 {
		t.Fatalf("String round trip changed the token:\n%+v\n%+v", t1, t2)
	}
	if err := t2.Verify(keyA, beforeExp); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseToken checks that parsing never panics, that every failure is a
// malformed-token error, and that a parsed token re-encodes, re-parses to
// the same token, verifies consistently, and can be re-signed.
func FuzzParseToken(f *testing.F) {
	f.Add(tok(keyA, "localhost%2Fdevices%2Fdev1", testSE, "", nodeOrder))
	f.Add(tok(keyA, "h%2fdevices%2fd1", testSE, "device", netOrder))
	f.Add("SharedAccessSignature sig=x&se=1&skn=a&sr=b")
	f.Add("SharedAccessSignature sr=%&sig=%%&se=")
	f.Fuzz(func(t *testing.T, s string) {
		tk, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) || !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("ParseToken(%q) error %v is not ErrMalformedToken", s, err)
			}
			return
		}
		again, err := ParseToken(tk.String())
		if err != nil {
			t.Fatalf("re-parse of %q (from %q): %v", tk.String(), s, err)
		}
		if again != tk {
			t.Fatalf("re-parse changed the token:\n%+v\n%+v", tk, again)
		}
		now := tk.Expiry.Add(-time.Second)
		if err := tk.Verify(keyC, now); err != nil && !errors.Is(err, ErrBadSignature) {
			t.Fatalf("Verify before expiry = %v, want nil or ErrBadSignature", err)
		}
		if err := tk.Verify(keyC, tk.Expiry); !errors.Is(err, ErrExpired) {
			t.Fatalf("Verify at expiry = %v, want ErrExpired", err)
		}
		if tk.DecodedResource() == "" {
			return
		}
		signed, err := Sign(tk.DecodedResource(), tk.KeyName, keyC, tk.Expiry)
		if err != nil {
			t.Fatalf("Sign(%q): %v", tk.DecodedResource(), err)
		}
		st, err := ParseToken(signed)
		if err != nil {
			t.Fatalf("ParseToken(Sign()) = %v for %q", err, signed)
		}
		if st.DecodedResource() != tk.DecodedResource() || st.KeyName != tk.KeyName || !st.Expiry.Equal(tk.Expiry) {
			t.Fatalf("re-signed token differs: %+v vs %+v", st, tk)
		}
		if err := st.Verify(keyC, now); err != nil {
			t.Fatalf("re-signed token does not verify: %v", err)
		}
	})
}
