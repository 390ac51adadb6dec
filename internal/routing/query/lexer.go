package query

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

type tokKind uint8

const (
	tEOF tokKind = iota
	tNumber
	tString
	tIdent // bare name or keyword
	tRef   // $name, with an optional path: $body.a.b[0]
	tLParen
	tRParen
	tLBracket
	tRBracket
	tComma
	tEq
	tNe
	tLt
	tLe
	tGt
	tGe
	tPlus
	tMinus
	tStar
	tSlash
	tPercent
)

// keyword identifies the reserved words; keywords are case-insensitive (spec 9.3).
type keyword uint8

const (
	kwNone keyword = iota
	kwAnd
	kwOr
	kwNot
	kwIn
	kwNin
	kwTrue
	kwFalse
	kwNull
	kwUndefined
)

// step is one element of a body or twin path: a property name, or an array index when index
// is not negative.
type step struct {
	name  string
	index int
}

type token struct {
	kind  tokKind
	off   int // byte offset of the first character
	end   int // byte offset after the last character
	text  string
	kw    keyword
	num   float64
	str   string // decoded string literal, or the name of a $reference
	steps []step // path of a $reference
}

// describe renders the token for "expected X but found Y".
func (t token) describe() string {
	if t.kind == tEOF {
		return "end of input"
	}
	return strconv.Quote(t.text)
}

type lexer struct {
	src string
	pos int
}

func (lx *lexer) fail(off int, format string, args ...any) *SyntaxError {
	e := errorAt(lx.src, off)
	e.Msg = fmt.Sprintf(format, args...)
	return e
}

func (lx *lexer) peekRune(off int) rune {
	if off >= len(lx.src) {
		return -1
	}
	r, _ := utf8.DecodeRuneInString(lx.src[off:])
	return r
}

func isNameStart(r rune) bool { return r == '_' || unicode.IsLetter(r) }
func isNameChar(r rune) bool  { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// segChar is a character of a path segment: twin paths hold names like $version and $metadata,
// and JSON keys may start with a digit.
func segChar(r rune) bool { return isNameChar(r) || r == '$' }

// scanName returns the end of a name starting at off whose characters satisfy ok. A '-' joins
// the name when a name character follows it directly, so $dt-subject and my-prop are names and
// "a - b" is a subtraction (spec 9.2: the lexer must allow '-' inside names).
func (lx *lexer) scanName(off int, ok func(rune) bool) int {
	for off < len(lx.src) {
		r, size := utf8.DecodeRuneInString(lx.src[off:])
		switch {
		case ok(r):
			off += size
		case r == '-' && ok(lx.peekRune(off+1)):
			off++
		default:
			return off
		}
	}
	return off
}

// next returns the next token.
func (lx *lexer) next() (token, error) {
	for lx.pos < len(lx.src) {
		r, size := utf8.DecodeRuneInString(lx.src[lx.pos:])
		if !unicode.IsSpace(r) {
			break
		}
		lx.pos += size
	}
	start := lx.pos
	if start >= len(lx.src) {
		return token{kind: tEOF, off: start, end: start}, nil
	}
	r, size := utf8.DecodeRuneInString(lx.src[start:])
	simple := func(k tokKind, n int) (token, error) {
		lx.pos = start + n
		return token{kind: k, off: start, end: lx.pos, text: lx.src[start:lx.pos]}, nil
	}
	switch r {
	case '(':
		return simple(tLParen, 1)
	case ')':
		return simple(tRParen, 1)
	case '[':
		return simple(tLBracket, 1)
	case ']':
		return simple(tRBracket, 1)
	case ',':
		return simple(tComma, 1)
	case '=':
		return simple(tEq, 1)
	case '+':
		return simple(tPlus, 1)
	case '-':
		return simple(tMinus, 1)
	case '*':
		return simple(tStar, 1)
	case '/':
		return simple(tSlash, 1)
	case '%':
		return simple(tPercent, 1)
	case '!':
		if lx.peekRune(start+1) == '=' {
			return simple(tNe, 2)
		}
	case '<':
		switch lx.peekRune(start + 1) {
		case '=':
			return simple(tLe, 2)
		case '>':
			return simple(tNe, 2)
		}
		return simple(tLt, 1)
	case '>':
		if lx.peekRune(start+1) == '=' {
			return simple(tGe, 2)
		}
		return simple(tGt, 1)
	case '\'', '"':
		return lx.stringLit(start, byte(r))
	case '$':
		return lx.ref(start)
	case '|':
		return token{}, lx.fail(start, "unexpected character '|': the query language has no || operator; use CONCAT or OR")
	case '&':
		return token{}, lx.fail(start, "unexpected character '&': use AND")
	case '.':
		if !isDigit(lx.peekRune(start + 1)) {
			return token{}, lx.fail(start, "unexpected character '.': only $body and $twin take a path")
		}
	}
	if r >= '0' && r <= '9' || r == '.' && isDigit(lx.peekRune(start+1)) {
		return lx.number(start)
	}
	if isNameStart(r) {
		end := lx.scanName(start, isNameChar)
		lx.pos = end
		t := token{kind: tIdent, off: start, end: end, text: lx.src[start:end]}
		t.kw = lookupKeyword(t.text)
		return t, nil
	}
	if r == utf8.RuneError && size == 1 {
		return token{}, lx.fail(start, "invalid UTF-8 in the query")
	}
	return token{}, lx.fail(start, "unexpected character %q", r)
}

func isDigit(r rune) bool    { return r >= '0' && r <= '9' }
func isHexDigit(r rune) bool { return isDigit(r) || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F' }

func lookupKeyword(s string) keyword {
	if len(s) > 9 {
		return kwNone
	}
	switch {
	case strings.EqualFold(s, "AND"):
		return kwAnd
	case strings.EqualFold(s, "OR"):
		return kwOr
	case strings.EqualFold(s, "NOT"):
		return kwNot
	case strings.EqualFold(s, "IN"):
		return kwIn
	case strings.EqualFold(s, "NIN"):
		return kwNin
	case strings.EqualFold(s, "true"):
		return kwTrue
	case strings.EqualFold(s, "false"):
		return kwFalse
	case strings.EqualFold(s, "null"):
		return kwNull
	case strings.EqualFold(s, "undefined"):
		return kwUndefined
	}
	return kwNone
}

// number scans a decimal float (12, 1.5, .5, 1e-3) or a hexadecimal integer (0x1F), spec 9.3.
// Signs are unary operators, not part of the literal.
func (lx *lexer) number(start int) (token, error) {
	s := lx.src
	i := start
	if s[i] == '0' && i+1 < len(s) && (s[i+1] == 'x' || s[i+1] == 'X') {
		j := i + 2
		for j < len(s) && isHexDigit(rune(s[j])) {
			j++
		}
		if j == i+2 {
			return token{}, lx.fail(j, "expected a hexadecimal digit after 0x")
		}
		n, err := strconv.ParseUint(s[i+2:j], 16, 64)
		if err != nil {
			return token{}, lx.fail(start, "hexadecimal literal %s is too large", s[start:j])
		}
		lx.pos = j
		return token{kind: tNumber, off: start, end: j, text: s[start:j], num: float64(n)}, nil
	}
	for i < len(s) && isDigit(rune(s[i])) {
		i++
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || !isDigit(rune(s[i])) {
			return token{}, lx.fail(i, "expected a digit after the decimal point")
		}
		for i < len(s) && isDigit(rune(s[i])) {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || !isDigit(rune(s[i])) {
			return token{}, lx.fail(i, "expected a digit in the exponent")
		}
		for i < len(s) && isDigit(rune(s[i])) {
			i++
		}
	}
	f, err := strconv.ParseFloat(s[start:i], 64)
	if err != nil { // only out of range can fail here
		return token{}, lx.fail(start, "number %s is out of range", s[start:i])
	}
	lx.pos = i
	return token{kind: tNumber, off: start, end: i, text: s[start:i], num: f}, nil
}

// stringLit scans '...' or "..." with the escapes of spec 9.3: \' \" \\ \uXXXX. Any other
// escape is an error rather than a guess.
func (lx *lexer) stringLit(start int, quote byte) (token, error) {
	s := lx.src
	var b strings.Builder
	i := start + 1
	for {
		if i >= len(s) {
			return token{}, lx.fail(start, "unterminated string literal")
		}
		c := s[i]
		if c == quote {
			i++
			break
		}
		if c != '\\' {
			j := i + 1
			for j < len(s) && s[j] != quote && s[j] != '\\' {
				j++
			}
			b.WriteString(s[i:j])
			i = j
			continue
		}
		if i+1 >= len(s) {
			return token{}, lx.fail(start, "unterminated string literal")
		}
		switch s[i+1] {
		case '\'', '"', '\\':
			b.WriteByte(s[i+1])
			i += 2
		case 'u':
			r, n, err := lx.unicodeEscape(i)
			if err != nil {
				return token{}, err
			}
			b.WriteRune(r)
			i += n
		default:
			r, _ := utf8.DecodeRuneInString(s[i+1:])
			return token{}, lx.fail(i, `unknown escape sequence \%c in string literal (allowed: \' \" \\ \uXXXX)`, r)
		}
	}
	lx.pos = i
	return token{kind: tString, off: start, end: i, text: s[start:i], str: b.String()}, nil
}

// unicodeEscape decodes \uXXXX at off, joining a UTF-16 surrogate pair written as two escapes.
func (lx *lexer) unicodeEscape(off int) (rune, int, error) {
	hex4 := func(at int) (rune, bool) {
		if at+6 > len(lx.src) || lx.src[at] != '\\' || lx.src[at+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(lx.src[at+2:at+6], 16, 32)
		return rune(v), err == nil
	}
	r, ok := hex4(off)
	if !ok {
		return 0, 0, lx.fail(off, `expected four hexadecimal digits after \u`)
	}
	if utf16.IsSurrogate(r) {
		if r2, ok := hex4(off + 6); ok {
			if pair := utf16.DecodeRune(r, r2); pair != unicode.ReplacementChar {
				return pair, 12, nil
			}
		}
		return unicode.ReplacementChar, 6, nil
	}
	return r, 6, nil
}

// ref scans a $reference: a system property ($contentType, $dt-subject) or a body or twin path
// ($body.a.b[0].c). Paths take no whitespace, like IoT Hub's (spec 9.2).
func (lx *lexer) ref(start int) (token, error) {
	nameStart := start + 1
	if !isNameStart(lx.peekRune(nameStart)) {
		return token{}, lx.fail(nameStart, "expected a property name after '$'")
	}
	end := lx.scanName(nameStart, isNameChar)
	t := token{kind: tRef, off: start, str: lx.src[nameStart:end]}
	i := end
	for i < len(lx.src) {
		switch lx.src[i] {
		case '.':
			segEnd := lx.scanName(i+1, segChar)
			if segEnd == i+1 {
				return token{}, lx.fail(i+1, "expected a property name after '.'")
			}
			t.steps = append(t.steps, step{name: lx.src[i+1 : segEnd], index: -1})
			i = segEnd
			continue
		case '[':
			j := i + 1
			for j < len(lx.src) && isDigit(rune(lx.src[j])) {
				j++
			}
			if j == i+1 || j >= len(lx.src) || lx.src[j] != ']' {
				return token{}, lx.fail(i+1, "expected an array index (digits followed by ']')")
			}
			n, err := strconv.Atoi(lx.src[i+1 : j])
			if err != nil {
				return token{}, lx.fail(i+1, "array index %s is too large", lx.src[i+1:j])
			}
			t.steps = append(t.steps, step{index: n})
			i = j + 1
			continue
		}
		break
	}
	lx.pos = i
	t.end = i
	t.text = lx.src[start:i]
	return t, nil
}
