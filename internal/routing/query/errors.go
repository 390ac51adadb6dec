package query

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error Compile returns is a *SyntaxError that matches ErrSyntax and, for
// the two semantic checks, ErrUnknownFunction or ErrArgumentCount, via errors.Is.
var (
	ErrSyntax          = errors.New("syntax error in routing query")
	ErrUnknownFunction = errors.New("unknown function")
	ErrArgumentCount   = errors.New("wrong number of arguments")
)

// SyntaxError is a condition IoT Hub would refuse to save. Positions are 1-based; Column counts
// characters (runes), Offset counts bytes from the start of the source.
type SyntaxError struct {
	Line     int
	Column   int
	Offset   int
	Expected string // what the parser wanted, e.g. "')'"; empty when not applicable
	Found    string // what it saw, e.g. `"AND"` or "end of input"; empty when not applicable
	Msg      string // used instead of Expected/Found when set
	kind     error  // ErrUnknownFunction, ErrArgumentCount or nil
}

func (e *SyntaxError) Error() string {
	var b strings.Builder
	if e.Line > 1 {
		fmt.Fprintf(&b, "line %d, ", e.Line)
	}
	fmt.Fprintf(&b, "column %d: ", e.Column)
	if e.Msg != "" {
		b.WriteString(e.Msg)
	} else {
		fmt.Fprintf(&b, "expected %s but found %s", e.Expected, e.Found)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrSyntax) true for every SyntaxError.
func (e *SyntaxError) Is(target error) bool {
	return target == ErrSyntax || (e.kind != nil && target == e.kind)
}

// errorAt builds a SyntaxError at a byte offset of src.
func errorAt(src string, off int) *SyntaxError {
	if off > len(src) {
		off = len(src)
	}
	line, col := 1, 1
	for _, r := range src[:off] {
		if r == '\n' {
			line++
			col = 1
			continue
		}
		col++
	}
	return &SyntaxError{Line: line, Column: col, Offset: off}
}
