// Package logformat sets how every binary's zerolog lines write times and
// durations, so that they read the same everywhere: timestamps in RFC 3339
// with milliseconds, and durations as Go duration strings that carry their
// unit ("1.5s", "250ms") rather than bare numbers.
package logformat

import (
	"github.com/rs/zerolog"
)

// TimeFormat is RFC 3339 with milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Set sets zerolog's global formats. Call it once, before any logger
// writes (from main's init): zerolog reads them on every event, unlocked.
func Set() {
	zerolog.TimeFieldFormat = TimeFormat
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
}
