//go:build !linux

package db

import "errors"

// queueWatch is the Linux queue watch's stand-in: elsewhere the queue is
// polled.
type queueWatch struct{ ready chan struct{} }

func startQueueWatch(string) (*queueWatch, error) {
	return nil, errors.New("watching the database's files needs Linux inotify")
}

func (*queueWatch) close() error { return nil }
