package actors

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestArchitecture_MessageTableMatchesMessagesGo keeps docs/ARCHITECTURE.md's
// "Who sends what to whom" table in step with actors/messages.go: every type
// declared there has a row (the exported messages, their parts and the
// package's own timers and internal messages), and every name in the
// table's first column is still declared.
func TestArchitecture_MessageTableMatchesMessagesGo(t *testing.T) {
	declared := messageTypes(t, "messages.go")
	if len(declared) < 40 {
		t.Fatalf("found only %d types in messages.go: %v", len(declared), sortedNames(declared))
	}
	listed := tableNames(t, filepath.Join("..", "docs", "ARCHITECTURE.md"), "## Who sends what to whom")

	for _, name := range sortedNames(declared) {
		if !listed[name] {
			t.Errorf("%s is declared in actors/messages.go but missing from the table in docs/ARCHITECTURE.md", name)
		}
	}
	for _, name := range sortedNames(listed) {
		if !declared[name] {
			t.Errorf("docs/ARCHITECTURE.md's table names %s, which actors/messages.go no longer declares", name)
		}
	}
}

// messageTypes returns the names of the types declared in file.
func messageTypes(t *testing.T, file string) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, decl := range f.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.TYPE {
			continue
		}
		for _, spec := range gen.Specs {
			names[spec.(*ast.TypeSpec).Name.Name] = true
		}
	}
	return names
}

// tableNames returns the `code` names in the first column of the first
// table under heading in the Markdown file.
func tableNames(t *testing.T, file, heading string) map[string]bool {
	t.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(text), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no heading %q", file, heading)
	}
	code := regexp.MustCompile("`([A-Za-z_][A-Za-z0-9_]*)`")
	names := map[string]bool{}
	rows := 0
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if rows > 0 {
				break // the end of the table
			}
			continue
		}
		rows++
		cells := strings.Split(line, "|")
		if rows <= 2 || len(cells) < 3 {
			continue // the header and its separator
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			names[m[1]] = true
		}
	}
	if len(names) == 0 {
		t.Fatalf("no table under %q in %s", heading, file)
	}
	return names
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
