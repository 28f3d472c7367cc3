//go:build wasip1

// Command wordcount is an example Casparian plugin built as a WebAssembly
// module (WASI preview 1):
//
//	GOOS=wasip1 GOARCH=wasm go build -o bin/plugins/wordcount.wasm ./plugins/wordcount
//
// or `make plugins`. The worker runs it with the job's input file as its
// only visible file, read-only, and its path as the first argument. It
// counts the words of the text (runs of letters and digits, lower-cased)
// and writes one row per distinct word to the "output" topic as a JSON line
// on stdout: {"topic":"output","row":{"word":"the","count":12}}, most
// frequent first, ties alphabetical. Anything it wants to say goes to
// stderr, which the worker keeps for the log and the error message.
//
// The build constraint keeps it out of the host's `go build ./...` and
// `go vet ./...`: it is a program for the wasip1 port only.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode"
)

// line is one output row, in the worker's stdout format.
type line struct {
	Topic string `json:"topic"`
	Row   row    `json:"row"`
}

// row keeps its fields in this order: the first row fixes the topic's
// column order.
type row struct {
	Word  string `json:"word"`
	Count int64  `json:"count"`
}

func main() {
	path := os.Getenv("CASPARIAN_INPUT")
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	if err := run(path); err != nil {
		fmt.Fprintln(os.Stderr, "wordcount:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	counts := map[string]int64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		words := strings.FieldsFunc(sc.Text(), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
		for _, w := range words {
			counts[strings.ToLower(w)]++
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	words := make([]string, 0, len(counts))
	for w := range counts {
		words = append(words, w)
	}
	sort.Slice(words, func(i, j int) bool {
		if counts[words[i]] != counts[words[j]] {
			return counts[words[i]] > counts[words[j]]
		}
		return words[i] < words[j]
	})
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for _, w := range words {
		if err := enc.Encode(line{Topic: "output", Row: row{Word: w, Count: counts[w]}}); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "wordcount: %d distinct words\n", len(words))
	return out.Flush()
}
