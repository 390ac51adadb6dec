package query

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// function is a built-in function. Exactly one of f1, f2, f3 and fv is set; the fixed-arity
// forms let a call evaluate without building an argument slice.
type function struct {
	name     string
	min, max int // max < 0: variadic
	f1       func(Value) Value
	f2       func(a, b Value) Value
	f3       func(a, b, c Value, hasC bool) Value // hasC: whether the call passed c
	fv       func([]Value) Value
}

// functions is the list of spec 9.5, no more: IoT Hub rejects other names (ROUND, LOG, ...) when
// a route is saved, and so does Compile.
var functions = [...]function{
	// Math.
	{name: "ABS", min: 1, max: 1, f1: math1(math.Abs)},
	{name: "EXP", min: 1, max: 1, f1: math1(math.Exp)},
	{name: "POWER", min: 2, max: 2, f2: power},
	{name: "SQUARE", min: 1, max: 1, f1: math1(func(x float64) float64 { return x * x })},
	{name: "CEILING", min: 1, max: 1, f1: math1(math.Ceil)},
	{name: "FLOOR", min: 1, max: 1, f1: math1(math.Floor)},
	{name: "SIGN", min: 1, max: 1, f1: math1(sign)},
	// The doc says SQRT returns "the square"; that is a copy-paste slip (spec 9.5).
	{name: "SQRT", min: 1, max: 1, f1: math1(math.Sqrt)},
	// Type checking and casting. The IS_ functions are always Boolean, never undefined.
	{name: "AS_NUMBER", min: 1, max: 1, f1: asNumber},
	{name: "IS_ARRAY", min: 1, max: 1, f1: isKind(Array)},
	{name: "IS_BOOL", min: 1, max: 1, f1: isKind(Bool)},
	{name: "IS_DEFINED", min: 1, max: 1, f1: func(v Value) Value { return BoolValue(v.kind != Undefined) }},
	{name: "IS_NULL", min: 1, max: 1, f1: isKind(Null)},
	{name: "IS_NUMBER", min: 1, max: 1, f1: isKind(Number)},
	{name: "IS_OBJECT", min: 1, max: 1, f1: isKind(Object)},
	{name: "IS_PRIMITIVE", min: 1, max: 1, f1: func(v Value) Value { return BoolValue(v.isPrimitive()) }},
	{name: "IS_STRING", min: 1, max: 1, f1: isKind(String)},
	// Strings.
	{name: "CONCAT", min: 2, max: -1, fv: concat},
	{name: "LENGTH", min: 1, max: 1, f1: length},
	{name: "LOWER", min: 1, max: 1, f1: str1(strings.ToLower)},
	{name: "UPPER", min: 1, max: 1, f1: str1(strings.ToUpper)},
	{name: "SUBSTRING", min: 2, max: 3, f3: substring},
	{name: "INDEX_OF", min: 2, max: 2, f2: indexOf},
	{name: "STARTS_WITH", min: 2, max: 2, f2: str2(strings.HasPrefix)},
	{name: "ENDS_WITH", min: 2, max: 2, f2: str2(strings.HasSuffix)},
	{name: "CONTAINS", min: 2, max: 2, f2: str2(strings.Contains)},
}

// lookupFunction finds a function; names are case-insensitive (the doc's examples use
// is_defined, length, as_number).
func lookupFunction(name string) *function {
	for i := range functions {
		if strings.EqualFold(functions[i].name, name) {
			return &functions[i]
		}
	}
	return nil
}

func (f *function) arity() string {
	switch {
	case f.max < 0:
		return strconv.Itoa(f.min) + " or more arguments"
	case f.min == f.max && f.min == 1:
		return "1 argument"
	case f.min == f.max:
		return strconv.Itoa(f.min) + " arguments"
	}
	if f.max == f.min+1 {
		return strconv.Itoa(f.min) + " or " + strconv.Itoa(f.max) + " arguments"
	}
	return strconv.Itoa(f.min) + " to " + strconv.Itoa(f.max) + " arguments"
}

func (f *function) compile(args []evalFn) evalFn {
	switch {
	case f.f1 != nil:
		fn, a := f.f1, args[0]
		return func(in Input) Value { return fn(a(in)) }
	case f.f2 != nil:
		fn, a, b := f.f2, args[0], args[1]
		return func(in Input) Value { return fn(a(in), b(in)) }
	case f.f3 != nil:
		fn, a, b := f.f3, args[0], args[1]
		if len(args) == 2 {
			return func(in Input) Value { return fn(a(in), b(in), Value{}, false) }
		}
		c := args[2]
		return func(in Input) Value { return fn(a(in), b(in), c(in), true) }
	}
	fn := f.fv
	return func(in Input) Value {
		vs := make([]Value, len(args))
		for i, a := range args {
			vs[i] = a(in)
		}
		return fn(vs)
	}
}

func math1(f func(float64) float64) func(Value) Value {
	return func(v Value) Value {
		if v.kind != Number {
			return Value{}
		}
		return NumberValue(f(v.n)) // NaN (SQRT(-1)) and overflow become undefined
	}
}

func power(a, b Value) Value {
	if a.kind != Number || b.kind != Number {
		return Value{}
	}
	return NumberValue(math.Pow(a.n, b.n))
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

func isKind(k Kind) func(Value) Value {
	return func(v Value) Value { return BoolValue(v.kind == k) }
}

// asNumber converts a string holding a decimal number (surrounding spaces, a sign, a fraction
// and an exponent allowed) and passes numbers through; anything else is undefined.
func asNumber(v Value) Value {
	switch v.kind {
	case Number:
		return v
	case String:
		s := strings.TrimSpace(v.s)
		if !isDecimal(s) {
			return Value{}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return Value{}
		}
		return NumberValue(f)
	}
	return Value{}
}

// isDecimal accepts [+-] digits [. digits] [e [+-] digits], with digits on at least one side of
// the point. It keeps ParseFloat's extras (Inf, NaN, hex floats, underscores) out.
func isDecimal(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i, digits = i+1, digits+1
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i, digits = i+1, digits+1
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(s)
}

func str1(f func(string) string) func(Value) Value {
	return func(v Value) Value {
		if v.kind != String {
			return Value{}
		}
		return StringValue(f(v.s))
	}
}

func str2(f func(a, b string) bool) func(a, b Value) Value {
	return func(a, b Value) Value {
		if a.kind != String || b.kind != String {
			return Value{}
		}
		return BoolValue(f(a.s, b.s))
	}
}

// concat joins two or more strings; any other argument makes the result undefined.
func concat(vs []Value) Value {
	n := 0
	for _, v := range vs {
		if v.kind != String {
			return Value{}
		}
		n += len(v.s)
	}
	var b strings.Builder
	b.Grow(n)
	for _, v := range vs {
		b.WriteString(v.s)
	}
	return StringValue(b.String())
}

// Lengths and positions count UTF-16 code units, as IoT Hub (a .NET service) does; for text in
// the Basic Multilingual Plane that is the number of characters.

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func utf16Len(s string) int {
	if isASCII(s) {
		return len(s)
	}
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

func length(v Value) Value {
	if v.kind != String {
		return Value{}
	}
	return NumberValue(float64(utf16Len(v.s)))
}

// substring is SUBSTRING(s, start [, length]): zero-based start, then length units or to the
// end. The doc names the third argument "end" but describes a length; length it is (spec 9.5,
// 15). Fractions are truncated; a negative start counts from 0; a negative length is empty.
func substring(s, start, n Value, hasN bool) Value {
	if s.kind != String || start.kind != Number || hasN && n.kind != Number {
		return Value{}
	}
	total := utf16Len(s.s)
	from := clampIndex(start.n, total)
	to := total
	if hasN {
		if n.n <= 0 {
			return StringValue("")
		}
		to = from + clampIndex(n.n, total-from)
	}
	if isASCII(s.s) {
		return StringValue(s.s[from:to])
	}
	u := utf16.Encode([]rune(s.s))
	return StringValue(string(utf16.Decode(u[from:to])))
}

func clampIndex(f float64, limit int) int {
	f = math.Trunc(f)
	switch {
	case f <= 0 || math.IsNaN(f):
		return 0
	case f >= float64(limit):
		return limit
	}
	return int(f)
}

func indexOf(s, frag Value) Value {
	if s.kind != String || frag.kind != String {
		return Value{}
	}
	i := strings.Index(s.s, frag.s)
	if i < 0 {
		return NumberValue(-1)
	}
	return NumberValue(float64(utf16Len(s.s[:i])))
}
