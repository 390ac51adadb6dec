package query

import (
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Kind is the type of a Value: the JSON types plus Undefined.
type Kind uint8

// The kinds of values an expression can produce.
const (
	Undefined Kind = iota // a missing reference, or an operation on the wrong types
	Null
	Bool
	Number
	String
	Object
	Array
)

var kindNames = [...]string{"undefined", "null", "Boolean", "number", "string", "object", "array"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is the result of evaluating an expression. The zero Value is undefined. Objects and
// arrays hold decoded JSON (map[string]any and []any) and must not be modified.
type Value struct {
	kind Kind
	b    bool
	n    float64
	s    string
	x    any // map[string]any for Object, []any for Array
}

// Constructors. A non-finite number is undefined: JSON cannot carry it and IoT Hub has no
// literal for it.
func UndefinedValue() Value      { return Value{} }
func NullValue() Value           { return Value{kind: Null} }
func BoolValue(b bool) Value     { return Value{kind: Bool, b: b} }
func StringValue(s string) Value { return Value{kind: String, s: s} }
func NumberValue(f float64) Value {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return Value{}
	}
	return Value{kind: Number, n: f}
}

// ValueOf converts decoded JSON (as encoding/json produces it into an any) to a Value. It also
// accepts Go integers and json.Number, which a TwinSource may hand back. Anything else is
// undefined.
func ValueOf(x any) Value {
	switch t := x.(type) {
	case nil:
		return NullValue()
	case bool:
		return BoolValue(t)
	case float64:
		return NumberValue(t)
	case string:
		return StringValue(t)
	case map[string]any:
		return Value{kind: Object, x: t}
	case []any:
		return Value{kind: Array, x: t}
	case int:
		return NumberValue(float64(t))
	case int64:
		return NumberValue(float64(t))
	case int32:
		return NumberValue(float64(t))
	case uint64:
		return NumberValue(float64(t))
	case float32:
		return NumberValue(float64(t))
	case json.Number:
		f, err := t.Float64()
		if err != nil {
			return Value{}
		}
		return NumberValue(f)
	}
	return Value{}
}

// Kind reports the value's type.
func (v Value) Kind() Kind { return v.kind }

// IsTrue reports whether v is Boolean true, the only value that makes a route match.
func (v Value) IsTrue() bool { return v.kind == Bool && v.b }

// AsBool returns the Boolean and whether v is one.
func (v Value) AsBool() (bool, bool) { return v.b, v.kind == Bool }

// AsNumber returns the number and whether v is one.
func (v Value) AsNumber() (float64, bool) { return v.n, v.kind == Number }

// AsString returns the string and whether v is one.
func (v Value) AsString() (string, bool) { return v.s, v.kind == String }

// Interface returns the value as decoded JSON: nil for null (and undefined), bool, float64,
// string, map[string]any or []any.
func (v Value) Interface() any {
	switch v.kind {
	case Bool:
		return v.b
	case Number:
		return v.n
	case String:
		return v.s
	case Object, Array:
		return v.x
	}
	return nil
}

// RouteResult is the answer of IoT Hub's route-test API: "true", "false" or "undefined". Any
// non-Boolean result (null, a number, a string, ...) is "undefined": it does not route.
func (v Value) RouteResult() string {
	if v.kind != Bool {
		return "undefined"
	}
	if v.b {
		return "true"
	}
	return "false"
}

// String renders the value in JSON notation, with "undefined" for Undefined, so Booleans read
// "true" and "false" as the route-test API has them. Object keys are sorted.
func (v Value) String() string {
	var b strings.Builder
	v.write(&b)
	return b.String()
}

func (v Value) write(b *strings.Builder) {
	switch v.kind {
	case Undefined:
		b.WriteString("undefined")
	case Null:
		b.WriteString("null")
	case Bool:
		b.WriteString(strconv.FormatBool(v.b))
	case Number:
		b.WriteString(formatNumber(v.n))
	case String:
		b.WriteString(strconv.Quote(v.s))
	case Array:
		b.WriteByte('[')
		for i, e := range v.x.([]any) {
			if i > 0 {
				b.WriteByte(',')
			}
			ValueOf(e).write(b)
		}
		b.WriteByte(']')
	case Object:
		m := v.x.(map[string]any)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(k))
			b.WriteByte(':')
			ValueOf(m[k]).write(b)
		}
		b.WriteByte('}')
	}
}

// formatNumber prints integers without an exponent or fraction, like JSON serializers do.
func formatNumber(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// isPrimitive reports whether v is a string, number, Boolean or null.
func (v Value) isPrimitive() bool {
	return v.kind == Null || v.kind == Bool || v.kind == Number || v.kind == String
}
