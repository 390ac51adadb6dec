package query

import (
	"fmt"
	"strings"
)

type nodeOp uint8

const (
	nLit   nodeOp = iota // a constant (also a folded constant expression)
	nApp                 // application property: processingPath
	nSys                 // system property: $contentType
	nBody                // $body.a.b[0]
	nTwin                // $twin.tags.a
	nNot                 // NOT x
	nNeg                 // -x
	nPos                 // +x
	nAnd                 // a AND b AND ...
	nOr                  // a OR b OR ...
	nCmp                 // a = b, a < b, ...
	nArith               // a + b, ...
	nIn                  // a IN [..]
	nNin                 // a NIN [..]
	nCall                // f(a, b)
)

// node is the parse tree. Compile turns it into closures; Explain walks it again.
type node struct {
	op       nodeOp
	off, end int      // source span, for messages
	tok      tokKind  // the operator of nCmp and nArith
	val      Value    // nLit
	name     string   // nApp, nSys: the name as written (nSys without '$')
	sys      *sysProp // nSys: nil for a $name that is not a system property keyword
	steps    []step   // nBody, nTwin
	twinPath []string // nTwin: the names before the first array index
	fn       *function
	kids     []*node
	eval     evalFn // set by compile
	folded   bool   // compile found n constant; its value is val
}

// Binding powers, lowest first. Precedence is not documented (spec 9.3, 15); these are SQL's:
// OR < AND < NOT < comparison, IN, NIN < + - < * / % < unary - +.
const (
	bpOr    = 1
	bpAnd   = 2
	bpNot   = 3
	bpCmp   = 4
	bpAdd   = 5
	bpMul   = 6
	bpUnary = 7
)

// maxDepth bounds nesting so a hostile condition cannot exhaust the stack.
const maxDepth = 200

type parser struct {
	lx    lexer
	src   string
	tok   token
	depth int
}

func (p *parser) advance() error {
	t, err := p.lx.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) expected(what string) *SyntaxError {
	e := errorAt(p.src, p.tok.off)
	e.Expected = what
	e.Found = p.tok.describe()
	return e
}

func (p *parser) failAt(off int, kind error, format string, args ...any) *SyntaxError {
	e := errorAt(p.src, off)
	e.Msg = fmt.Sprintf(format, args...)
	e.kind = kind
	return e
}

// parse parses a whole condition.
func parse(src string) (*node, error) {
	p := &parser{lx: lexer{src: src}, src: src}
	if err := p.advance(); err != nil {
		return nil, err
	}
	n, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.expected("an operator or end of input")
	}
	return n, nil
}

// infix returns the binding power of the current token as a binary operator, or 0.
func (p *parser) infix() int {
	switch p.tok.kind {
	case tEq, tNe, tLt, tLe, tGt, tGe:
		return bpCmp
	case tPlus, tMinus:
		return bpAdd
	case tStar, tSlash, tPercent:
		return bpMul
	case tIdent:
		switch p.tok.kw {
		case kwOr:
			return bpOr
		case kwAnd:
			return bpAnd
		case kwIn, kwNin:
			return bpCmp
		}
	}
	return 0
}

func (p *parser) expr(rbp int) (*node, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, p.failAt(p.tok.off, nil, "expression is nested too deeply")
	}
	left, err := p.prefix()
	if err != nil {
		return nil, err
	}
	for {
		lbp := p.infix()
		if lbp <= rbp {
			return left, nil
		}
		op := p.tok
		if err := p.advance(); err != nil {
			return nil, err
		}
		right, err := p.expr(lbp)
		if err != nil {
			return nil, err
		}
		n := &node{off: left.off, end: right.end, kids: []*node{left, right}}
		switch {
		case op.kw == kwAnd:
			n.op = nAnd
		case op.kw == kwOr:
			n.op = nOr
		case op.kw == kwIn:
			n.op = nIn
		case op.kw == kwNin:
			n.op = nNin
		case lbp == bpCmp:
			n.op, n.tok = nCmp, op.kind
		default:
			n.op, n.tok = nArith, op.kind
		}
		// Flatten chains of AND (or OR) so evaluation is one loop, not a tower of closures.
		if (n.op == nAnd || n.op == nOr) && left.op == n.op {
			left.kids = append(left.kids, right)
			left.end = right.end
			n = left
		}
		left = n
	}
}

func (p *parser) prefix() (*node, error) {
	t := p.tok
	switch t.kind {
	case tNumber:
		return p.literal(NumberValue(t.num))
	case tString:
		return p.literal(StringValue(t.str))
	case tLParen:
		if err := p.advance(); err != nil {
			return nil, err
		}
		n, err := p.expr(0)
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tRParen {
			return nil, p.expected("')'")
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		return n, nil
	case tLBracket:
		return p.array()
	case tMinus, tPlus:
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := p.expr(bpUnary)
		if err != nil {
			return nil, err
		}
		op := nNeg
		if t.kind == tPlus {
			op = nPos
		}
		return &node{op: op, off: t.off, end: x.end, kids: []*node{x}}, nil
	case tRef:
		if err := p.advance(); err != nil {
			return nil, err
		}
		return refNode(p, t)
	case tIdent:
		switch t.kw {
		case kwTrue:
			return p.literal(BoolValue(true))
		case kwFalse:
			return p.literal(BoolValue(false))
		case kwNull:
			return p.literal(NullValue())
		case kwUndefined:
			return p.literal(UndefinedValue())
		case kwNot:
			if err := p.advance(); err != nil {
				return nil, err
			}
			x, err := p.expr(bpNot)
			if err != nil {
				return nil, err
			}
			return &node{op: nNot, off: t.off, end: x.end, kids: []*node{x}}, nil
		case kwNone:
			if err := p.advance(); err != nil {
				return nil, err
			}
			if p.tok.kind == tLParen {
				return p.call(t)
			}
			return &node{op: nApp, off: t.off, end: t.end, name: t.text}, nil
		}
	}
	return nil, p.expected("an expression")
}

func (p *parser) literal(v Value) (*node, error) {
	n := &node{op: nLit, off: p.tok.off, end: p.tok.end, val: v}
	return n, p.advance()
}

// refNode classifies a $reference. $body and $twin are case-insensitive keywords; any other
// $name is a system property, and takes no path.
func refNode(p *parser, t token) (*node, error) {
	n := &node{off: t.off, end: t.end, name: t.str, steps: t.steps}
	switch {
	case strings.EqualFold(t.str, "body"):
		n.op = nBody
	case strings.EqualFold(t.str, "twin"):
		n.op = nTwin
		for _, s := range t.steps {
			if s.index >= 0 {
				break
			}
			n.twinPath = append(n.twinPath, s.name)
		}
	default:
		if len(t.steps) > 0 {
			return nil, p.failAt(t.off+1+len(t.str), nil, "only $body and $twin take a path; $%s is a property", t.str)
		}
		n.op = nSys
		n.sys = lookupSysProp(t.str)
	}
	return n, nil
}

// call parses f(args) after the name; p.tok is '('.
func (p *parser) call(name token) (*node, error) {
	fn := lookupFunction(name.text)
	if fn == nil {
		return nil, p.failAt(name.off, ErrUnknownFunction, "unknown function %q", name.text)
	}
	n := &node{op: nCall, off: name.off, fn: fn}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind != tRParen {
		for {
			arg, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			n.kids = append(n.kids, arg)
			if p.tok.kind == tRParen {
				break
			}
			if p.tok.kind != tComma {
				return nil, p.expected("',' or ')'")
			}
			if err := p.advance(); err != nil {
				return nil, err
			}
		}
	}
	n.end = p.tok.end
	if got := len(n.kids); got < fn.min || fn.max >= 0 && got > fn.max {
		return nil, p.failAt(name.off, ErrArgumentCount, "%s takes %s but got %d", fn.name, fn.arity(), got)
	}
	return n, p.advance()
}

// array parses an array constant, spec 9.3: '[' constant {',' constant} ']'. Elements may be
// constant expressions such as -1.
func (p *parser) array() (*node, error) {
	start := p.tok.off
	if err := p.advance(); err != nil {
		return nil, err
	}
	var elems []any
	if p.tok.kind != tRBracket {
		for {
			el, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			compileNode(el)
			if !el.isConst() {
				return nil, p.failAt(el.off, nil, "array elements must be constants")
			}
			if el.val.kind == Undefined {
				return nil, p.failAt(el.off, nil, "an array cannot hold undefined")
			}
			elems = append(elems, el.val.Interface())
			if p.tok.kind == tRBracket {
				break
			}
			if p.tok.kind != tComma {
				return nil, p.expected("',' or ']'")
			}
			if err := p.advance(); err != nil {
				return nil, err
			}
		}
	}
	if elems == nil {
		elems = []any{}
	}
	n := &node{op: nLit, off: start, end: p.tok.end, val: Value{kind: Array, x: elems}}
	return n, p.advance()
}
