package query

import (
	"fmt"
	"strings"
)

// Explanation is the result of a condition with the reasons it is not simply true, for the
// route-test API and the live tap: which references are undefined and why, and which operations
// gave up on their operands' types.
type Explanation struct {
	Result Value
	Notes  []string
}

func (e Explanation) String() string {
	var b strings.Builder
	b.WriteString(e.Result.RouteResult())
	for _, n := range e.Notes {
		b.WriteString("\n- ")
		b.WriteString(n)
	}
	return b.String()
}

// Explain evaluates the condition and says why parts of it are undefined. It is slower than
// Eval and meant for people, not for the routing path.
func (q *Query) Explain(in Input) Explanation {
	x := explainer{q: q, in: in, seen: map[string]bool{}}
	x.walk(q.root)
	e := Explanation{Result: q.eval(in), Notes: x.notes}
	if e.Result.kind != Bool {
		e.Notes = append(e.Notes, fmt.Sprintf("the condition evaluates to %s, not a Boolean, so the route does not match", short(e.Result)))
	}
	return e
}

type explainer struct {
	q     *Query
	in    Input
	seen  map[string]bool
	notes []string
}

func (x *explainer) text(n *node) string { return x.q.src[n.off:n.end] }

func (x *explainer) note(n *node, format string, args ...any) {
	s := x.text(n) + " " + fmt.Sprintf(format, args...)
	if !x.seen[s] {
		x.seen[s] = true
		x.notes = append(x.notes, s)
	}
}

// short renders a value for a message, eliding long strings, objects and arrays.
func short(v Value) string {
	switch v.kind {
	case Object:
		return "an object"
	case Array:
		return "an array"
	}
	s := v.String()
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

func article(k Kind) string {
	switch k {
	case Undefined:
		return "undefined"
	case Null:
		return "null"
	case Array, Object:
		return "an " + k.String()
	}
	return "a " + k.String()
}

func (x *explainer) walk(n *node) {
	for _, k := range n.kids {
		x.walk(k)
	}
	v := n.eval(x.in)
	switch n.op {
	case nApp:
		if v.kind == Undefined {
			x.note(n, "is undefined: the message has no application property %q", n.name)
		}
	case nSys:
		if v.kind == Undefined {
			if n.sys == nil {
				x.note(n, "is undefined: it is not a system property keyword, and the message has no application property %q", "$"+n.name)
			} else {
				x.note(n, "is undefined: the message has no %s system property", n.sys.wire)
			}
		}
	case nBody:
		if v.kind != Undefined {
			break
		}
		if len(n.steps) == 0 || n.steps[0].index >= 0 {
			x.note(n, "is undefined: conditions can query properties inside the body, not the whole body")
			break
		}
		if _, ok := x.in.Body(); !ok {
			why := "the body is not available"
			if be, ok := x.in.(BodyExplainer); ok && be.BodyUnavailableReason() != "" {
				why = be.BodyUnavailableReason()
			}
			x.note(n, "is undefined: %s", why)
			break
		}
		x.note(n, "is undefined: the body has no value at this path (body paths are case-sensitive)")
	case nTwin:
		if v.kind != Undefined {
			break
		}
		if len(n.twinPath) == 0 {
			x.note(n, "is undefined: use a path such as $twin.tags.name or $twin.properties.reported.name")
			break
		}
		if mi, ok := x.in.(*messageInput); ok && mi.twin == nil {
			x.note(n, "is undefined: no twin is available for this message")
			break
		}
		x.note(n, "is undefined: the twin has no value at this path")
	case nCmp, nIn, nNin:
		a, b := n.kids[0].eval(x.in), n.kids[1].eval(x.in)
		if v.kind != Undefined || a.kind == Undefined || b.kind == Undefined {
			break
		}
		switch {
		case n.op != nCmp && b.kind != Array:
			x.note(n, "is undefined: the right side of IN and NIN must be an array, not %s", article(b.kind))
		case !a.isPrimitive() || !b.isPrimitive():
			x.note(n, "is undefined: only strings, numbers, Booleans and null compare, not %s", article(nonPrimitive(a, b)))
		default:
			hint := ""
			if app := appSide(n); app != "" && (a.kind == Number || b.kind == Number) {
				hint = fmt.Sprintf("; application properties are strings: use as_number(%s)", app)
			}
			x.note(n, "is undefined: it compares %s with %s%s", article(a.kind), article(b.kind), hint)
		}
	case nArith:
		a, b := n.kids[0].eval(x.in), n.kids[1].eval(x.in)
		if v.kind != Undefined || a.kind == Undefined || b.kind == Undefined {
			break
		}
		if a.kind == Number && b.kind == Number {
			x.note(n, "is undefined: division by zero or a result out of range")
		} else {
			x.note(n, "is undefined: arithmetic needs numbers, not %s and %s", article(a.kind), article(b.kind))
		}
	case nCall:
		if v.kind != Undefined {
			break
		}
		kinds := make([]string, len(n.kids))
		for i, k := range n.kids {
			kv := k.eval(x.in)
			if kv.kind == Undefined {
				return // the undefined argument has its own note
			}
			kinds[i] = article(kv.kind)
		}
		x.note(n, "is undefined: %s does not accept %s", n.fn.name, strings.Join(kinds, ", "))
	case nNot, nAnd, nOr:
		for _, k := range n.kids {
			if kv := k.eval(x.in); kv.kind != Bool && kv.kind != Undefined {
				x.note(k, "is %s, not a Boolean, so it counts as undefined", short(kv))
			}
		}
	}
}

func nonPrimitive(a, b Value) Kind {
	if !a.isPrimitive() {
		return a.kind
	}
	return b.kind
}

// appSide returns the name of an application property compared directly, if any.
func appSide(n *node) string {
	for _, k := range n.kids {
		if k.op == nApp {
			return k.name
		}
	}
	return ""
}
