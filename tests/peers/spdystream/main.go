// A SPDY client built on spdystream (the library the kubelet's and kubectl's streaming
// clients use), as an independent peer of the agent's SPDY server. Usage:
//
//	spdystream exec URL STDIN      prints "stdout:...", "stderr:...", "error:..." lines
//	spdystream forward URL PORT REQUEST   prints what the port answered
//
// Built by the ignored test in tests/cri_streaming.rs with Debian's golang-go and
// golang-github-docker-spdystream-dev (GOPATH mode).
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/docker/spdystream"
)

func dial(raw, protocol string) *spdystream.Connection {
	u, err := url.Parse(raw)
	check(err)
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	check(err)
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: %s\r\n\r\n", u.Path, u.Host, protocol)
	_, err = conn.Write([]byte(req))
	check(err)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	check(err)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		fail("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("X-Stream-Protocol-Version"); got != protocol {
		fail("protocol %q", got)
	}
	if br.Buffered() > 0 {
		fail("bytes after the upgrade response")
	}
	c, err := spdystream.NewConnection(conn, false)
	check(err)
	go c.Serve(spdystream.NoOpStreamHandler)
	return c
}

func open(c *spdystream.Connection, headers map[string]string) *spdystream.Stream {
	h := http.Header{}
	for k, v := range headers {
		h.Set(k, v)
	}
	s, err := c.CreateStream(h, nil, false)
	check(err)
	check(s.WaitTimeout(10 * time.Second))
	return s
}

func readAll(s *spdystream.Stream, out chan<- string) {
	b, _ := io.ReadAll(s)
	out <- string(b)
}

func main() {
	switch os.Args[1] {
	case "exec":
		c := dial(os.Args[2], "v4.channel.k8s.io")
		errS := open(c, map[string]string{"streamType": "error"})
		stdin := open(c, map[string]string{"streamType": "stdin"})
		stdout := open(c, map[string]string{"streamType": "stdout"})
		stderr := open(c, map[string]string{"streamType": "stderr"})
		o, e, x := make(chan string, 1), make(chan string, 1), make(chan string, 1)
		go readAll(stdout, o)
		go readAll(stderr, e)
		go readAll(errS, x)
		_, err := stdin.Write([]byte(os.Args[3]))
		check(err)
		check(stdin.Close())
		fmt.Printf("stdout:%q\nstderr:%q\nerror:%s\n", <-o, <-e, <-x)
	case "forward":
		c := dial(os.Args[2], "portforward.k8s.io")
		errS := open(c, map[string]string{"streamType": "error", "port": os.Args[3], "requestID": "0"})
		data := open(c, map[string]string{"streamType": "data", "port": os.Args[3], "requestID": "0"})
		d, x := make(chan string, 1), make(chan string, 1)
		go readAll(data, d)
		go readAll(errS, x)
		_, err := data.Write([]byte(strings.ReplaceAll(os.Args[4], `\n`, "\r\n")))
		check(err)
		check(data.Close())
		fmt.Printf("data:%q\n", <-d)
		select {
		case m := <-x:
			fmt.Printf("error:%q\n", m)
		case <-time.After(2 * time.Second):
		}
	}
}

func check(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "spdystream peer: "+f+"\n", a...)
	os.Exit(1)
}
