// Package query implements IoT Hub's message routing query language (spec section 9): the
// conditions of routes, such as
//
//	$contentEncoding = 'UTF-8' AND processingPath = 'hot' AND $body.Weather.Temperature > 40
//
// A hand-written lexer and Pratt parser turn a condition into a tree, which is compiled once into
// closures (constant subexpressions folded); evaluating a compiled Query does not parse or
// reflect, and property comparisons do not allocate. MessageInput adapts a message.Message.
//
// Evaluation follows IoT Hub's three-valued logic: a missing property is undefined, undefined
// propagates through comparisons, arithmetic and functions, comparing values of different types
// is undefined rather than an error, and a route matches only when the condition is Boolean true.
// Explain says why a condition is undefined, for route testing.
//
// # Case rules
//
// Keywords (AND, OR, NOT, IN, NIN, true, false, null, undefined), function names, $body, $twin
// and system property keywords are case-insensitive. Application property names and twin paths
// are case-insensitive (spec 9.2; an exact match wins). Body paths are case-sensitive, as JSON is.
// String comparisons are case-sensitive.
//
// # Decisions where the spec is silent or unconfirmed
//
//   - IN and NIN are supported (spec 15: unconfirmed for routes). The right side is an array,
//     usually a constant: processingPath IN ['hot', 'warm']. A route using them may not save on
//     IoT Hub.
//   - Precedence is SQL's: OR < AND < NOT < comparisons, IN, NIN < + - < * / % < unary - +.
//     Binary operators are left-associative.
//   - Functions are exactly spec 9.5's list; any other name (ROUND, LOG, TRUNC, ...) fails to
//     compile with ErrUnknownFunction. SQRT is the square root (the doc's "square" is a slip).
//     SUBSTRING's third argument is a length; fractions truncate, a negative start counts from 0,
//     a length of 0 or less gives "". LENGTH, SUBSTRING and INDEX_OF count UTF-16 code units, as
//     .NET does. CONCAT needs two or more strings. AS_NUMBER accepts decimal notation with
//     surrounding spaces, not hex, Infinity or NaN. The IS_ functions never return undefined.
//   - '-' belongs to a name when it sits between two name characters: $dt-subject, my-prop and
//     $body.dash-key are names, so subtraction of names needs spaces (a - b). Paths take no
//     whitespace; path segments may contain '$' ($twin.properties.reported.$version). Array
//     indexes are digits only.
//   - $name is the system property when name is a keyword of spec 9.2 (plus creation-time-utc, an
//     alias of iothub-creation-time-utc) and the message has it; otherwise the application
//     property "$name" (spec 9.2). $body and $twin alone, and $body[0], compile and are undefined.
//   - Body queries need contentType application/json (any case, no parameters) and
//     contentEncoding utf-8, utf-16 or utf-32 (any case). UTF-16 and UTF-32 honour a byte order
//     mark and default to little-endian; a UTF-8 BOM is skipped. An undecodable body makes body
//     references undefined.
//   - Comparisons: same-type primitives only; null = null is true and null compares with nothing
//     else; false < true; strings compare by code point. Arithmetic takes numbers only (no string
//     +); division or modulo by zero and non-finite results are undefined. AND and OR count a
//     non-Boolean operand as undefined, and stop at the first false (AND) or true (OR) operand.
//   - String escapes are exactly \' \" \\ and \uXXXX (a surrogate pair in two escapes is joined);
//     anything else fails to compile. Numbers are float64; hex literals are unsigned integers.
//   - Array constants may be empty or hold one element (the grammar asks for two or more) and
//     hold constant expressions such as -1, never undefined.
//   - An empty condition does not compile: IoT Hub's absent condition means true, and that is
//     the caller's to apply.
package query

import (
	"math"
	"strings"
)

// Query is a compiled condition. It is immutable and safe for concurrent use.
type Query struct {
	src  string
	root *node
	eval evalFn
}

type evalFn func(Input) Value

// Compile parses and compiles a route condition. Errors are *SyntaxError (see ErrSyntax). IoT
// Hub treats an absent condition as true; Compile does not: an empty source is an error, and
// callers decide what "absent" means.
func Compile(src string) (*Query, error) {
	root, err := parse(src)
	if err != nil {
		return nil, err
	}
	compileNode(root)
	return &Query{src: src, root: root, eval: root.eval}, nil
}

// MustCompile is Compile for conditions known to be valid, such as constants in tests.
func MustCompile(src string) *Query {
	q, err := Compile(src)
	if err != nil {
		panic(err)
	}
	return q
}

// String returns the source of the condition.
func (q *Query) String() string { return q.src }

// Eval evaluates the condition. in may be nil only for a condition that reads no input.
func (q *Query) Eval(in Input) Value { return q.eval(in) }

// Matches reports whether the condition is Boolean true for in: whether the route applies.
func (q *Query) Matches(in Input) bool { return q.eval(in).IsTrue() }

// compileNode sets n.eval, and folds n into a literal when it reads no input.
func compileNode(n *node) {
	if n.eval != nil {
		return
	}
	constant := true
	for _, k := range n.kids {
		compileNode(k)
		constant = constant && k.isConst()
	}
	switch n.op {
	case nLit:
		v := n.val
		n.eval = func(Input) Value { return v }
		return
	case nApp:
		n.eval = appRef(n.name)
		return
	case nSys:
		n.eval = sysRef(n)
		return
	case nBody:
		n.eval = bodyRef(n.steps)
		return
	case nTwin:
		n.eval = twinRef(n)
		return
	}
	n.eval = compileOp(n)
	if constant {
		// Keep op and kids: Explain still describes the folded expression.
		n.val = n.eval(nil)
		n.folded = true
		v := n.val
		n.eval = func(Input) Value { return v }
	}
}

// isConst reports whether n reads no input; its value is then n.val.
func (n *node) isConst() bool { return n.op == nLit || n.folded }

func compileOp(n *node) evalFn {
	k := n.kids
	switch n.op {
	case nNot:
		x := k[0].eval
		return func(in Input) Value {
			v := x(in)
			if v.kind != Bool {
				return Value{}
			}
			return BoolValue(!v.b)
		}
	case nNeg, nPos:
		x, neg := k[0].eval, n.op == nNeg
		return func(in Input) Value {
			v := x(in)
			if v.kind != Number {
				return Value{}
			}
			if neg {
				return NumberValue(-v.n)
			}
			return v
		}
	case nAnd:
		return andOf(kidEvals(k))
	case nOr:
		return orOf(kidEvals(k))
	case nCmp:
		return compileCompare(n.tok, k[0], k[1])
	case nArith:
		l, r, op := k[0].eval, k[1].eval, n.tok
		return func(in Input) Value { return arith(op, l(in), r(in)) }
	case nIn, nNin:
		l, r, neg := k[0].eval, k[1].eval, n.op == nNin
		return func(in Input) Value { return member(l(in), r(in), neg) }
	case nCall:
		return n.fn.compile(kidEvals(k))
	}
	panic("query: unknown node")
}

func kidEvals(kids []*node) []evalFn {
	fs := make([]evalFn, len(kids))
	for i, k := range kids {
		fs[i] = k.eval
	}
	return fs
}

// andOf is three-valued AND: false if any operand is false, true if all are true, otherwise
// undefined. Operands after a false one are not evaluated (so a body is not decoded for a
// message the property clauses already rejected). Non-Boolean operands count as undefined.
func andOf(fs []evalFn) evalFn {
	return func(in Input) Value {
		all := true
		for _, f := range fs {
			v := f(in)
			if v.kind != Bool {
				all = false
			} else if !v.b {
				return BoolValue(false)
			}
		}
		if all {
			return BoolValue(true)
		}
		return Value{}
	}
}

// orOf is three-valued OR: true if any operand is true, false if all are false, otherwise
// undefined.
func orOf(fs []evalFn) evalFn {
	return func(in Input) Value {
		all := true
		for _, f := range fs {
			v := f(in)
			if v.kind != Bool {
				all = false
			} else if v.b {
				return BoolValue(true)
			}
		}
		if all {
			return BoolValue(false)
		}
		return Value{}
	}
}

func appRef(name string) evalFn {
	return func(in Input) Value {
		if s, ok := in.AppProperty(name); ok {
			return StringValue(s)
		}
		return Value{}
	}
}

// sysRef reads a $name: the system property when the name is a keyword and the message has it,
// else the application property "$name" (spec 9.2: system first, then application).
func sysRef(n *node) evalFn {
	p, app := n.sys, "$"+n.name
	if p == nil {
		return appRef(app)
	}
	id, keyword := p.id, p.keyword
	return func(in Input) Value {
		var s string
		var ok bool
		if mi, fast := in.(*messageInput); fast {
			s, ok = mi.sys(id)
		} else {
			s, ok = in.SystemProperty(keyword)
		}
		if !ok {
			s, ok = in.AppProperty(app)
		}
		if ok {
			return StringValue(s)
		}
		return Value{}
	}
}

// bodyRef reads $body.path. The whole body, and a path that starts with an index, are
// unsupported and undefined (spec 9.2: "$body[0] = 'Feb'" is undefined).
func bodyRef(steps []step) evalFn {
	if len(steps) == 0 || steps[0].index >= 0 {
		return func(Input) Value { return Value{} }
	}
	return func(in Input) Value {
		root, ok := in.Body()
		if !ok {
			return Value{}
		}
		v, ok := walk(root, steps, false)
		if !ok {
			return Value{}
		}
		return ValueOf(v)
	}
}

// twinRef reads $twin.path through Input.Twin; steps from the first array index on are walked
// here.
func twinRef(n *node) evalFn {
	path, rest := n.twinPath, n.steps[len(n.twinPath):]
	if len(path) == 0 {
		return func(Input) Value { return Value{} }
	}
	return func(in Input) Value {
		v, ok := in.Twin(path)
		if !ok {
			return Value{}
		}
		if len(rest) > 0 {
			if v, ok = walk(v, rest, true); !ok {
				return Value{}
			}
		}
		return ValueOf(v)
	}
}

// compileCompare specializes comparisons with a constant side, the common shape of a condition
// clause, to one closure call.
func compileCompare(op tokKind, l, r *node) evalFn {
	le, re := l.eval, r.eval
	if r.isConst() && r.val.kind == String && (op == tEq || op == tNe) {
		want, eq := r.val.s, op == tEq
		return func(in Input) Value {
			v := le(in)
			if v.kind != String {
				return compare(op, v, StringValue(want))
			}
			return BoolValue((v.s == want) == eq)
		}
	}
	if r.isConst() {
		c := r.val
		return func(in Input) Value { return compare(op, le(in), c) }
	}
	return func(in Input) Value { return compare(op, le(in), re(in)) }
}

// compare applies a comparison operator. Only primitives of the same type compare (spec 9.3);
// anything else, and anything undefined, is undefined. Strings compare by code point.
func compare(op tokKind, a, b Value) Value {
	if a.kind != b.kind || !a.isPrimitive() {
		return Value{}
	}
	var c int
	switch a.kind {
	case Number:
		switch {
		case a.n < b.n:
			c = -1
		case a.n > b.n:
			c = 1
		}
	case String:
		c = strings.Compare(a.s, b.s)
	case Bool:
		switch {
		case a.b == b.b:
		case b.b:
			c = -1
		default:
			c = 1
		}
	case Null:
		// null equals null.
	}
	var r bool
	switch op {
	case tEq:
		r = c == 0
	case tNe:
		r = c != 0
	case tLt:
		r = c < 0
	case tLe:
		r = c <= 0
	case tGt:
		r = c > 0
	case tGe:
		r = c >= 0
	}
	return BoolValue(r)
}

// arith applies + - * / % to numbers; any other operand, division by zero and overflow are
// undefined. There is no string concatenation operator (spec 9.3: use CONCAT).
func arith(op tokKind, a, b Value) Value {
	if a.kind != Number || b.kind != Number {
		return Value{}
	}
	switch op {
	case tPlus:
		return NumberValue(a.n + b.n)
	case tMinus:
		return NumberValue(a.n - b.n)
	case tStar:
		return NumberValue(a.n * b.n)
	case tSlash:
		if b.n == 0 {
			return Value{}
		}
		return NumberValue(a.n / b.n)
	case tPercent:
		if b.n == 0 {
			return Value{}
		}
		return NumberValue(math.Mod(a.n, b.n))
	}
	return Value{}
}

// member is IN (NIN when neg): whether a primitive equals an element of an array. An undefined
// or non-primitive left side, or a right side that is not an array, is undefined.
func member(a, arr Value, neg bool) Value {
	if !a.isPrimitive() || arr.kind != Array {
		return Value{}
	}
	for _, e := range arr.x.([]any) {
		if compare(tEq, a, ValueOf(e)).IsTrue() {
			return BoolValue(!neg)
		}
	}
	return BoolValue(neg)
}
