package wasm

import (
	"io"
	"io/fs"
	"os"
	"time"
)

// singleFile is an fs.FS holding exactly one file, name, backed by the host
// file at path: the module's whole view of the host. Mounted through
// wazero's fs.FS adapter it is read-only (writes fail with EROFS), and the
// input's siblings do not exist for the guest.
type singleFile struct {
	name string // base name of the input
	path string // host path
}

func (s singleFile) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	switch name {
	case ".":
		return &rootDir{s: s}, nil
	case s.name:
		return os.Open(s.path)
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// rootDir is the directory that lists the one file.
type rootDir struct {
	s    singleFile
	read bool // ReadDir has returned the entry
}

func (d *rootDir) Stat() (fs.FileInfo, error) { return dirInfo{}, nil }
func (d *rootDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: ".", Err: fs.ErrInvalid}
}
func (d *rootDir) Close() error { return nil }

// ReadDir implements fs.ReadDirFile.
func (d *rootDir) ReadDir(n int) ([]fs.DirEntry, error) {
	if d.read {
		if n > 0 {
			return nil, io.EOF
		}
		return nil, nil
	}
	st, err := os.Stat(d.s.path)
	if err != nil {
		return nil, err
	}
	d.read = true
	return []fs.DirEntry{fs.FileInfoToDirEntry(namedInfo{FileInfo: st, name: d.s.name})}, nil
}

// namedInfo reports the file under its name inside the module.
type namedInfo struct {
	fs.FileInfo
	name string
}

func (i namedInfo) Name() string { return i.name }

// dirInfo describes the read-only root directory.
type dirInfo struct{}

func (dirInfo) Name() string       { return "." }
func (dirInfo) Size() int64        { return 0 }
func (dirInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (dirInfo) ModTime() time.Time { return time.Time{} }
func (dirInfo) IsDir() bool        { return true }
func (dirInfo) Sys() any           { return nil }
