package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

const tokenPrefix = "SharedAccessSignature"

// Token is a parsed SAS token.
type Token struct {
	// Resource is the sr parameter exactly as sent, still URL-encoded:
	// the signature covers these bytes, so they must not be re-encoded.
	Resource string
	// Signature is the sig parameter, URL-decoded (base64 text).
	Signature string
	// Expiry is the se parameter.
	Expiry time.Time
	// KeyName is the skn parameter, URL-decoded; empty for tokens signed
	// with a device or module key.
	KeyName string

	rawExpiry string            // se as sent; part of the string to sign
	sig       [sha256.Size]byte // decoded Signature
	sigOK     bool              // Signature decoded to exactly one SHA-256 MAC
}

// ParseToken parses "SharedAccessSignature k=v&k=v..." with the parameters
// sr, sig, se and skn in any order (SDKs differ: Node sends sr,sig,skn,se;
// .NET and Java sr,sig,se,skn). sr, sig and se are required, se must be
// decimal Unix seconds, and no known parameter may repeat. Unknown
// parameters are ignored: they are not signed, so they cannot grant
// anything. Errors match ErrMalformedToken.
func ParseToken(s string) (Token, error) {
	var t Token
	rest, ok := cutPrefixFold(strings.TrimSpace(s), tokenPrefix)
	if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
		return t, malformed("missing %q prefix", tokenPrefix)
	}
	rest = strings.TrimLeft(rest, " \t")
	var seen [4]bool
	for rest != "" {
		var kv string
		kv, rest, _ = strings.Cut(rest, "&")
		k, v, _ := strings.Cut(kv, "=")
		var idx int
		switch k {
		case "sr":
			idx = 0
		case "sig":
			idx = 1
		case "se":
			idx = 2
		case "skn":
			idx = 3
		default:
			continue
		}
		if seen[idx] {
			return Token{}, malformed("duplicate parameter %q", k)
		}
		seen[idx] = true
		if v == "" {
			return Token{}, malformed("empty parameter %q", k)
		}
		var err error
		switch idx {
		case 0:
			// Decoded on demand: the hot path only needs it in a stack buffer.
			if !validEscapes(v) {
				return Token{}, malformed("sr: invalid percent-encoding in %q", v)
			}
			t.Resource = v
		case 1:
			if t.Signature, err = unescape(v); err != nil {
				return Token{}, malformed("sig: %v", err)
			}
		case 2:
			n, err := strconv.ParseUint(v, 10, 63)
			if err != nil {
				return Token{}, malformed("se %q is not decimal Unix seconds", v)
			}
			t.rawExpiry = v
			t.Expiry = time.Unix(int64(n), 0).UTC()
		case 3:
			if t.KeyName, err = unescape(v); err != nil {
				return Token{}, malformed("skn: %v", err)
			}
		}
	}
	for i, name := range [...]string{"sr", "sig", "se"} {
		if !seen[i] {
			return Token{}, malformed("missing parameter %q", name)
		}
	}
	// A signature of the wrong length or alphabet parses (the token is
	// well-formed) but can never verify.
	t.sigOK = decodeMAC(&t.sig, t.Signature)
	return t, nil
}

// decodeMAC decodes a base64 HMAC-SHA256 (padded, or unpadded as some
// encoders emit it) into dst.
func decodeMAC(dst *[sha256.Size]byte, s string) bool {
	var buf [sha256.Size + 1]byte // 44 unpadded chars would decode to 33 bytes
	var n int
	var err error
	switch len(s) {
	case 44:
		n, err = base64.StdEncoding.Decode(buf[:], []byte(s))
	case 43:
		n, err = base64.RawStdEncoding.Decode(buf[:], []byte(s))
	default:
		return false
	}
	if err != nil || n != sha256.Size {
		return false
	}
	*dst = [sha256.Size]byte(buf[:sha256.Size])
	return true
}

// DecodedResource returns sr URL-decoded, e.g. "myhub.example/devices/d1".
func (t Token) DecodedResource() string {
	s, _ := unescape(t.Resource) // validated by ParseToken
	return s
}

// String re-encodes the token in the Node SDK parameter order. It signs
// nothing: sr and se are emitted as they were received.
func (t Token) String() string {
	var b strings.Builder
	b.WriteString(tokenPrefix + " sr=")
	b.WriteString(t.Resource)
	b.WriteString("&sig=")
	b.WriteString(encodeStrict(t.Signature))
	if t.KeyName != "" {
		b.WriteString("&skn=")
		b.WriteString(encodeStrict(t.KeyName))
	}
	b.WriteString("&se=")
	b.WriteString(t.rawExpiry)
	return b.String()
}

// Verify checks the signature against key (standard base64, as stored in
// the registry or policy) and the expiry against now. The MAC covers sr and
// se exactly as sent; if that fails the documented canonical form (the
// lower-cased URI with lower-case escapes) is tried too, for clients that
// sign the canonical form but transmit something else.
func (t Token) Verify(key string, now time.Time) error {
	k, err := newMACKey(key)
	if err != nil {
		return fmt.Errorf("auth: verify token: %w", err)
	}
	return t.verify(k, now)
}

// expired reports whether the token is past its expiry (now >= se).
func (t Token) expired(now time.Time) bool { return !now.Before(t.Expiry) }

func (t Token) verify(k *macKey, now time.Time) error {
	if t.expired(now) {
		return ErrExpired
	}
	if t.signedBy(k) {
		return nil
	}
	return ErrBadSignature
}

// signedBy reports whether any of keys (nil entries skipped) produced the
// token's signature, ignoring expiry. The as-sent form is tried with every
// key before the canonical form is built, so a secondary-key token costs
// no extra encoding.
func (t *Token) signedBy(keys ...*macKey) bool {
	if !t.sigOK {
		return false
	}
	for _, k := range keys {
		if k != nil && k.verify(t.Resource, t.rawExpiry, &t.sig) {
			return true
		}
	}
	canon := t.canonicalResource()
	if canon == t.Resource {
		return false
	}
	for _, k := range keys {
		if k != nil && k.verify(canon, t.rawExpiry, &t.sig) {
			return true
		}
	}
	return false
}

// canonicalResource is the doc's canonical sr: "lower case URL-encoding of
// the lower case resource URI".
func (t Token) canonicalResource() string {
	return strings.ToLower(encodeStrict(strings.ToLower(t.DecodedResource())))
}

// Sign returns a SAS token for resourceURI ("host/devices/d1", not
// encoded) in the Node SDK form: sr is encodeURIComponentStrict of the URI
// (upper-case escapes) and parameters come in the order sr, sig, skn, se.
// keyName is empty for device and module keys.
func Sign(resourceURI, keyName, key string, expiry time.Time) (string, error) {
	if resourceURI == "" {
		return "", fmt.Errorf("auth: sign: empty resource URI")
	}
	k, err := newMACKey(key)
	if err != nil {
		return "", fmt.Errorf("auth: sign %s: %w", resourceURI, err)
	}
	sr := encodeStrict(resourceURI)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sum := k.mac(sr, se)
	t := Token{
		Resource:  sr,
		Signature: base64.StdEncoding.EncodeToString(sum[:]),
		KeyName:   keyName,
		rawExpiry: se,
	}
	return t.String(), nil
}

// macKey is a decoded key plus a pool of HMAC states keyed with it, so the
// verification hot path neither decodes base64 nor allocates.
type macKey struct {
	key  []byte
	pool sync.Pool // *macState
}

type macState struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

func newMACKey(key string) (*macKey, error) {
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return nil, fmt.Errorf("key is not standard base64: %w", err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("empty key")
	}
	return &macKey{key: b}, nil
}

// mac returns HMAC-SHA256(key, sr + "\n" + se).
func (k *macKey) mac(sr, se string) [sha256.Size]byte {
	st := k.state()
	defer k.pool.Put(st)
	return *st.compute(sr, se)
}

// verify reports in constant time whether sig is the MAC of sr and se.
func (k *macKey) verify(sr, se string, sig *[sha256.Size]byte) bool {
	st := k.state()
	defer k.pool.Put(st)
	return hmac.Equal(st.compute(sr, se)[:], sig[:])
}

func (k *macKey) state() *macState {
	if st, _ := k.pool.Get().(*macState); st != nil {
		st.h.Reset()
		return st
	}
	return &macState{h: hmac.New(sha256.New, k.key), buf: make([]byte, 0, 256)}
}

// compute hashes into the state's own buffers so nothing escapes per call.
func (st *macState) compute(sr, se string) *[sha256.Size]byte {
	st.buf = append(append(append(st.buf[:0], sr...), '\n'), se...)
	st.h.Write(st.buf)
	st.h.Sum(st.sum[:0])
	return &st.sum
}

// encodeStrict is the Node SDK's encodeUriComponentStrict: everything but
// ALPHA / DIGIT / "-" / "_" / "." / "~" is percent-encoded with upper-case
// hex.
func encodeStrict(s string) string {
	const hex = "0123456789ABCDEF"
	n := 0
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return string(b)
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '~'
}

// unescape percent-decodes s. Unlike query decoding it keeps '+' as '+':
// base64 signatures and device ids contain it, and SDKs that do not escape
// it mean a plus.
func unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		return s, nil
	}
	var buf [128]byte
	b, ok := unescapeAppend(buf[:0], s)
	if !ok {
		return "", fmt.Errorf("invalid percent-encoding in %q", s)
	}
	return string(b), nil
}

// validEscapes reports whether every '%' in s starts a valid escape.
func validEscapes(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+2 >= len(s) {
			return false
		}
		if _, ok := unhex(s[i+1]); !ok {
			return false
		}
		if _, ok := unhex(s[i+2]); !ok {
			return false
		}
		i += 2
	}
	return true
}

func unescapeAppend(dst []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			dst = append(dst, c)
			continue
		}
		if i+2 >= len(s) {
			return dst, false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return dst, false
		}
		dst = append(dst, hi<<4|lo)
		i += 2
	}
	return dst, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("auth: parse SAS token: %s: %w", fmt.Sprintf(format, args...), ErrMalformedToken)
}
