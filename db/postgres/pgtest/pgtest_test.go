package pgtest

import (
	"runtime"
	"testing"
)

// recorder is a testing.TB that records how a test ended instead of ending
// the real one. Fatalf and Skipf end the goroutine, as testing's do.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper()                  {}
func (r *recorder) Skipf(string, ...any)     { r.skipped = true; runtime.Goexit() }
func (r *recorder) Fatalf(string, ...any)    { r.failed = true; runtime.Goexit() }
func (r *recorder) Cleanup(func())           {}
func (r *recorder) Errorf(string, ...any)    { r.failed = true }
func (r *recorder) Logf(string, ...any)      {}
func (r *recorder) Name() string             { return "recorder" }
func (r *recorder) Setenv(key, value string) {}

// Without a server, Database skips outside CI and fails in CI.
func TestDatabase_WithoutServer(t *testing.T) {
	saved, savedWhy := adminURL, unavailable
	t.Cleanup(func() { adminURL, unavailable = saved, savedWhy })
	adminURL, unavailable = "", nil

	for _, tc := range []struct {
		name        string
		ci          string
		skip, fails bool
	}{
		{"OutsideCI", "", true, false},
		{"InCI", "true", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			r := &recorder{}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Database(r)
			}()
			<-done
			if r.skipped != tc.skip || r.failed != tc.fails {
				t.Errorf("skipped %v, failed %v; want %v, %v", r.skipped, r.failed, tc.skip, tc.fails)
			}
		})
	}
}

func TestVersion_ReadsTheFolderName(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want int
	}{
		{"/usr/lib/postgresql/15/bin", 15},
		{"/usr/lib/postgresql/9/bin", 9},
		{"/usr/lib/postgresql/x/bin", 0},
	} {
		if got := version(tc.dir); got != tc.want {
			t.Errorf("version(%q) = %d, want %d", tc.dir, got, tc.want)
		}
	}
}
