package plugin

import (
	"fmt"
	"strconv"
	"strings"
)

// kind is the inferred type of a text column.
type kind uint8

const (
	kindString kind = iota
	kindInt
	kindFloat
	kindBool
)

// parse converts one field to the kind's Go value; the empty field is nil.
func (k kind) parse(s string) (any, error) {
	if s == "" {
		return nil, nil
	}
	switch k {
	case kindInt:
		if !isInt(s) {
			return nil, fmt.Errorf("%q is not an integer", s)
		}
		return strconv.ParseInt(s, 10, 64)
	case kindFloat:
		if !isDecimal(s) {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return strconv.ParseFloat(s, 64)
	case kindBool:
		switch {
		case strings.EqualFold(s, "true"):
			return true, nil
		case strings.EqualFold(s, "false"):
			return false, nil
		}
		return nil, fmt.Errorf("%q is not true or false", s)
	}
	return s, nil
}

// guess narrows a column's possible kinds as values are seen.
type guess struct {
	intOK, floatOK, boolOK bool
	seen                   bool
}

func newGuess() guess { return guess{intOK: true, floatOK: true, boolOK: true} }

func (g *guess) observe(s string) {
	if s == "" {
		return
	}
	g.seen = true
	if g.intOK && !isInt(s) {
		g.intOK = false
	}
	if g.floatOK && !isDecimal(s) {
		g.floatOK = false
	}
	if g.boolOK && !strings.EqualFold(s, "true") && !strings.EqualFold(s, "false") {
		g.boolOK = false
	}
}

func (g guess) kind() kind {
	switch {
	case !g.seen:
		return kindString
	case g.intOK:
		return kindInt
	case g.floatOK:
		return kindFloat
	case g.boolOK:
		return kindBool
	}
	return kindString
}

// isInt accepts an optional sign and decimal digits that fit int64, with no
// leading zero (so "007" and "0123" stay strings).
func isInt(s string) bool {
	d := strings.TrimLeft(s, "+-")
	if len(s)-len(d) > 1 || d == "" || (len(d) > 1 && d[0] == '0') {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

// isDecimal accepts plain decimal notation with an optional exponent
// ("-1.5", ".5", "2e10") that fits float64, without a leading zero before
// another digit. strconv.ParseFloat alone would
// also take "NaN", "Inf" and hex floats, which in a data file are text.
func isDecimal(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	if i+1 < len(s) && s[i] == '0' && s[i+1] >= '0' && s[i+1] <= '9' {
		return false // "007", "01.5": a code, not a number
	}
	digits := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		digits++
	}
	if i < len(s) && s[i] == '.' {
		for i++; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			digits++
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
		exp := 0
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			exp++
		}
		if exp == 0 {
			return false
		}
	}
	if i != len(s) {
		return false
	}
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}
