package actors

import "testing"

func TestGlobPattern_GitignoreStyle(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern string
		rel     string
		want    bool
	}{
		{"*.csv", "a.csv", true},
		{"*.csv", "deep/down/a.csv", true},
		{"*.csv", "a.csv.bak", false},
		{"tmp", "tmp/a.csv", true},        // a folder name at any depth
		{"tmp", "x/tmp/y/a.csv", true},    // ...and everything inside it
		{"tmp", "tmpfile.csv", false},     // whole names only
		{"build/", "build/out.bin", true}, // folders only
		{"build/", "build", false},        // a file named build is not a folder
		{"exports/*.json", "exports/a.json", true},
		{"exports/*.json", "x/exports/a.json", false}, // a slash anchors it at the root
		{"/raw", "raw/a", true},
		{"/raw", "x/raw/a", false},
		{"data/**/*.csv", "data/a.csv", true},
		{"data/**/*.csv", "data/2024/01/a.csv", true},
		{"data/**/*.csv", "other/data/a.csv", false},
		{"**/cache", "a/b/cache/x", true},
		{"logs/**", "logs/a/b", true},
		{"report-?.csv", "report-1.csv", true},
		{"report-[0-9].csv", "report-x.csv", false},
		{"!*.csv", "a.csv", false}, // negation is not supported: matches nothing
		{"", "a.csv", false},
		{"[", "a.csv", false}, // malformed
	}
	for _, tc := range cases {
		g, ok := compileGlob(tc.pattern)
		got := ok && g.matchFile(tc.rel)
		if got != tc.want {
			t.Errorf("%q matching %q = %v, want %v", tc.pattern, tc.rel, got, tc.want)
		}
	}
}
