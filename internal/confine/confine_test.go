package confine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree builds, under a temp folder:
//
//	data/in/a.csv
//	data/in/sub/
//	data2/b.csv
//	etc/secret
//	data/in/out   -> etc       (a folder link out)
//	data/in/inner -> data/in/sub (a folder link within)
//	data/in/pw    -> etc/secret  (a file link out)
//	data/in/up    -> ..          (relative link to data)
//	data/in/deep  -> etc/x/y     (a link to a path that does not exist)
//	link          -> data        (a root that is a link)
func tree(t *testing.T) string {
	t.Helper()
	top, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"data/in/sub", "data2", "etc"} {
		if err := os.MkdirAll(filepath.Join(top, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"data/in/a.csv", "data2/b.csv", "etc/secret"} {
		if err := os.WriteFile(filepath.Join(top, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, to := range map[string]string{
		"data/in/out":   filepath.Join(top, "etc"),
		"data/in/inner": filepath.Join(top, "data/in/sub"),
		"data/in/pw":    filepath.Join(top, "etc/secret"),
		"data/in/up":    "..",
		"data/in/deep":  filepath.Join(top, "etc/x/y"),
		"link":          filepath.Join(top, "data"),
	} {
		if err := os.Symlink(to, filepath.Join(top, link)); err != nil {
			t.Fatal(err)
		}
	}
	return top
}

func TestResolve_CleansDotsLinksAndMissingTails(t *testing.T) {
	top := tree(t)
	for _, c := range []struct{ name, in, want string }{
		{"Plain", "data/in/a.csv", "data/in/a.csv"},
		{"Clean", "data//in/./sub/", "data/in/sub"},
		{"DotDot", "data/in/sub/../a.csv", "data/in/a.csv"},
		{"DotDotOut", "data/in/../../etc/secret", "etc/secret"},
		{"FolderLinkOut", "data/in/out/secret", "etc/secret"},
		{"FileLinkOut", "data/in/pw", "etc/secret"},
		{"LinkWithin", "data/in/inner", "data/in/sub"},
		{"RelativeLink", "data/in/up/in/a.csv", "data/in/a.csv"},
		// The link is followed before "..": out/.. is etc's parent, top,
		// not data/in as filepath.Clean would have it.
		{"DotDotAfterLink", "data/in/out/../data2/b.csv", "data2/b.csv"},
		{"MissingTail", "data/in/new/deeper/x.db", "data/in/new/deeper/x.db"},
		{"MissingUnderLinkOut", "data/in/out/new/x.db", "etc/new/x.db"},
		{"DanglingLink", "data/in/deep/z", "etc/x/y/z"},
		{"DotDotInMissingTail", "data/in/missing/../../../etc/x", "etc/x"},
		{"LinkAfterMissingAndDots", "data/in/missing/../out/x", "etc/x"},
		{"RootIsALink", "link/in/a.csv", "data/in/a.csv"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Resolve(filepath.Join(top, "") + string(filepath.Separator) + c.in)
			if want := filepath.Join(top, c.want); err != nil || got != want {
				t.Fatalf("Resolve(%s) = %q, %v; want %q", c.in, got, err, want)
			}
		})
	}
	t.Run("Relative", func(t *testing.T) {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := filepath.EvalSymlinks(wd)
		if got, err := Resolve("nothing-here/x"); err != nil || got != filepath.Join(want, "nothing-here/x") {
			t.Fatalf("Resolve(relative) = %q, %v", got, err)
		}
	})
	t.Run("LinkLoop", func(t *testing.T) {
		loop := filepath.Join(top, "loop")
		if err := os.Symlink(loop, loop); err != nil {
			t.Fatal(err)
		}
		if got, err := Resolve(loop + "/x"); err == nil {
			t.Fatalf("Resolve(a link to itself) = %q, want an error", got)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		if _, err := Resolve(""); err == nil {
			t.Fatal("Resolve(\"\") succeeded")
		}
	})
}

func TestUnder_ComparesWholeElements(t *testing.T) {
	for _, c := range []struct {
		path, root string
		want       bool
	}{
		{"/data", "/data", true},
		{"/data/x", "/data", true},
		{"/data/x/y", "/data/", true},
		{"/data2", "/data", false},
		{"/data2/x", "/data", false},
		{"/dat", "/data", false},
		{"/", "/data", false},
		{"/anything", "/", true},
		{"/data", "/data/x", false},
	} {
		if got := Under(c.path, c.root); got != c.want {
			t.Errorf("Under(%q, %q) = %v, want %v", c.path, c.root, got, c.want)
		}
	}
}

func TestCheck_RefusesEveryWayOut(t *testing.T) {
	top := tree(t)
	data := filepath.Join(top, "data")
	p := func(rel string) string { return filepath.Join(top, "") + string(filepath.Separator) + rel }
	for _, c := range []struct {
		name, path string
		roots      []string
		ok         bool
	}{
		{"Inside", p("data/in/a.csv"), []string{data}, true},
		{"NestedMissing", p("data/in/new/x"), []string{data}, true},
		{"TheRootItself", p("data"), []string{data}, true},
		{"SecondRoot", p("data2/b.csv"), []string{data, p("data2")}, true},
		{"RootGivenThroughALink", p("data/in/a.csv"), []string{p("link")}, true},
		{"PathThroughALinkToTheRoot", p("link/in/a.csv"), []string{data}, true},
		{"RootWithDotDot", p("data/in/a.csv"), []string{p("etc/../data")}, true},
		{"PrefixTrick", p("data2/b.csv"), []string{data}, false},
		{"DotDot", p("data/in/../../etc/secret"), []string{data}, false},
		{"FolderLinkOut", p("data/in/out/secret"), []string{data}, false},
		{"FileLinkOut", p("data/in/pw"), []string{data}, false},
		{"DanglingLinkOut", p("data/in/deep/new.db"), []string{data}, false},
		// Lexically data/in/data2/b.csv; the system follows out first.
		{"DotDotAfterLink", p("data/in/out/../data2/b.csv"), []string{p("data/in")}, false},
		{"NoRoots", p("data/in/a.csv"), nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Check(c.path, c.roots, "--test-root")
			if c.ok {
				if err != nil || !strings.HasPrefix(got, top) {
					t.Fatalf("Check(%s) = %q, %v; want allowed", c.path, got, err)
				}
				return
			}
			var out *OutsideError
			if !errors.As(err, &out) {
				t.Fatalf("Check(%s) = %q, %v; want an *OutsideError", c.path, got, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.path) || !strings.Contains(msg, "is outside --test-root") ||
				(len(c.roots) > 0 && !strings.Contains(msg, c.roots[0])) {
				t.Errorf("message %q does not name the path, the label and the roots", msg)
			}
		})
	}
}

func TestSame_ByPathAndByFile(t *testing.T) {
	top := tree(t)
	secret := filepath.Join(top, "etc/secret")
	hard := filepath.Join(top, "data2/hard")
	if err := os.Link(secret, hard); err != nil {
		t.Skipf("no hard links here: %v", err)
	}
	for _, c := range []struct {
		name, other string
		want        bool
	}{
		{"SamePath", secret, true},
		{"ThroughALink", filepath.Join(top, "data/in/pw"), true},
		{"ThroughDotDot", filepath.Join(top, "data") + "/in/../../etc/secret", true},
		{"HardLink", hard, true},
		{"Other", filepath.Join(top, "data2/b.csv"), false},
		{"MissingWAL", secret + "-wal", false},
	} {
		if got := Same(c.other, secret); got != c.want {
			t.Errorf("%s: Same(%s, secret) = %v, want %v", c.name, c.other, got, c.want)
		}
	}
	if !Same(filepath.Join(top, "data/in/out/new-wal"), filepath.Join(top, "etc/new-wal")) {
		t.Error("two spellings of a file not created yet are not the same")
	}
}

func TestSinkFile_ReadsWhatTheWorkerWrites(t *testing.T) {
	for _, c := range []struct{ uri, scheme, path, table, err string }{
		{uri: "sqlite:///data/out.db/rows", scheme: "sqlite", path: "/data/out.db", table: "rows"},
		{uri: "SQLITE://rel/x.db/t", scheme: "sqlite", path: "rel/x.db", table: "t"},
		{uri: "sqlite:///data/%63asparian.db/t", scheme: "sqlite", path: "/data/casparian.db", table: "t"},
		{uri: "parquet://output/x.parquet", scheme: "parquet", path: "output/x.parquet"},
		{uri: "file:///abs/my%20file.csv", scheme: "file", path: "/abs/my file.csv"},
		{uri: "sqlite://nothing", err: "sqlite://<path"},
		{uri: "parquet://", err: "empty path"},
		{uri: "no-scheme.csv", err: "scheme://"},
	} {
		scheme, path, table, err := SinkFile(c.uri)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("SinkFile(%q) error %v, want %q", c.uri, err, c.err)
			}
			continue
		}
		if err != nil || scheme != c.scheme || path != c.path || table != c.table {
			t.Errorf("SinkFile(%q) = %q %q %q %v", c.uri, scheme, path, table, err)
		}
	}
}
