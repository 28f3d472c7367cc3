//go:build wasip1

// Command misbehave is a test plugin for the worker's WebAssembly limits.
// What it does is the first line of its input, so one module (one costly
// compilation under the race detector) serves every case:
//
//	loop         spin forever
//	hog          allocate 1 MiB blocks, keeping them, forever
//	exit N       write to stderr and exit with code N
//	badline      write one good row, then a line that is not JSON, then spin
//	rows N       write N rows {"n": i, "label": "row-i"}
//	peek         report what it can see and do as rows {"check", "result"}
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

var kept [][]byte

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(1)
	}
	sc := bufio.NewScanner(f)
	sc.Scan()
	cmd := strings.Fields(sc.Text())
	f.Close()
	if len(cmd) == 0 {
		os.Exit(1)
	}
	arg := 0
	if len(cmd) > 1 {
		arg, _ = strconv.Atoi(cmd[1])
	}
	switch cmd[0] {
	case "loop":
		spin()
	case "hog":
		for {
			b := make([]byte, 1<<20)
			b[0] = 1
			kept = append(kept, b)
		}
	case "exit":
		fmt.Fprintf(os.Stderr, "giving up with %d\n", arg)
		os.Exit(arg)
	case "badline":
		fmt.Println(`{"topic":"output","row":{"n":1}}`)
		fmt.Println(`this is not JSON`)
		spin()
	case "rows":
		for i := range arg {
			fmt.Printf("{\"row\":{\"n\":%d,\"label\":\"row-%d\"}}\n", i, i)
		}
	case "peek":
		peek()
	}
}

var sink int

func spin() {
	for i := 0; ; i++ {
		sink = i
	}
}

// peek emits what the module sees: its arguments, its environment, the
// directory listing of /input, and whether it can reach anything else.
func peek() {
	row := func(check, result string) {
		fmt.Printf("{\"row\":{\"check\":%q,\"result\":%q}}\n", check, result)
	}
	row("args", strings.Join(os.Args, " "))
	for _, k := range []string{"CASPARIAN_INPUT", "CASPARIAN_INPUT_NAME", "CASPARIAN_INPUT_SIZE", "CASPARIAN_JOB_ID", "CASPARIAN_FILE_VERSION_ID", "CASPARIAN_PLUGIN"} {
		row(k, os.Getenv(k))
	}
	var names []string
	if ents, err := os.ReadDir("/input"); err != nil {
		names = append(names, "error")
	} else {
		for _, e := range ents {
			names = append(names, e.Name())
		}
	}
	row("list", strings.Join(names, ","))
	outcome := func(err error) string {
		if err != nil {
			return "denied"
		}
		return "allowed"
	}
	_, err := os.Stat("/input/sibling.txt")
	row("sibling", outcome(err))
	_, err = os.ReadDir("/")
	root := outcome(err)
	if ents, err := os.ReadDir("/"); err == nil {
		var all []string
		for _, e := range ents {
			all = append(all, e.Name())
		}
		root = strings.Join(all, ",")
	}
	row("root", root)
	w, err := os.OpenFile(os.Getenv("CASPARIAN_INPUT"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = w.WriteString("tampered")
		w.Close()
	}
	row("write", outcome(err))
	_, err = os.Create("/input/new.txt")
	row("create", outcome(err))
}
