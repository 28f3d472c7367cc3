package plugin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"unicode"
)

// TextStats counts a text file's lines, words (runs of non-space
// characters), characters (UTF-8 runes; an invalid byte counts as one) and
// bytes, and emits one row to "output": path, lines, words, chars, bytes. A
// last line without a newline still counts as a line.
type TextStats struct{}

// Name implements Plugin.
func (TextStats) Name() string { return "text_stats" }

// Run implements Plugin.
func (TextStats) Run(ctx context.Context, in Input, emit Emitter) error {
	f, err := in.Open(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only: Close loses nothing
	br := bufio.NewReaderSize(f, 64<<10)
	var lines, words, chars, size int64
	inWord, lastNL := false, true
	for {
		r, n, err := br.ReadRune()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		size += int64(n)
		chars++
		lastNL = r == '\n'
		if lastNL {
			lines++
		}
		if space := unicode.IsSpace(r); space {
			inWord = false
		} else if !inWord {
			inWord = true
			words++
		}
	}
	if !lastNL {
		lines++
	}
	return emit.Emit(OutputTopic, Row{
		Columns: []string{"path", "lines", "words", "chars", "bytes"},
		Values:  []any{in.Path, lines, words, chars, size},
	})
}

// Checksum hashes the file and emits one row to "output": path, size_bytes,
// sha256 (lower-case hex).
type Checksum struct{}

// Name implements Plugin.
func (Checksum) Name() string { return "checksum" }

// Run implements Plugin.
func (Checksum) Run(ctx context.Context, in Input, emit Emitter) error {
	f, err := in.Open(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only: Close loses nothing
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 256<<10))
	if err != nil {
		return err
	}
	return emit.Emit(OutputTopic, Row{
		Columns: []string{"path", "size_bytes", "sha256"},
		Values:  []any{in.Path, n, hex.EncodeToString(h.Sum(nil))},
	})
}
