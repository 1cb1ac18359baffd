// loadgen: the benchmark's closed-loop HTTP/1.1 load generator, light enough that on a 2-core
// machine a run is limited by the server, not by it.
//
// It reads prepared requests (one JSON object a line: method, path with its query, headers,
// body) from stdin, serialises each to bytes once, then runs `-c` workers for `-d` seconds, each
// on its own keep-alive connection, sending the next unused request when the last one answered.
// A pool used up ends the run early (the caller prepares more than the server can answer).
// It writes one JSON object: elapsed seconds, its own CPU seconds in that time (reading and
// serialising the pool excluded), each request's latency in microseconds, and the count of each
// status (0: the connection failed).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type request struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    *string           `json:"body"`
}

type report struct {
	Seconds     float64        `json:"seconds"`
	CPUSeconds  float64        `json:"cpu_seconds"` // its own, in the timed window only
	LatenciesUs []int64        `json:"latencies_us"`
	Statuses    map[string]int `json:"statuses"`
}

func serialise(r request, host string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.Method, r.Path, host)
	for k, v := range r.Headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if r.Body != nil {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(*r.Body), *r.Body)
	} else {
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// readResponse reads one response whole; it returns the status and whether the server keeps
// the connection open.
func readResponse(in *bufio.Reader) (int, bool, error) {
	line, err := in.ReadString('\n')
	if err != nil {
		return 0, false, err
	}
	parts := strings.SplitN(line, " ", 3)
	if len(parts) < 2 {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(parts[1])
	if err != nil {
		return 0, false, err
	}
	length, chunked, keep := -1, false, !strings.HasPrefix(parts[0], "HTTP/1.0")
	for {
		header, err := in.ReadString('\n')
		if err != nil {
			return 0, false, err
		}
		header = strings.TrimRight(header, "\r\n")
		if header == "" {
			break
		}
		name, value, _ := strings.Cut(header, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			length, _ = strconv.Atoi(value)
		case "transfer-encoding":
			chunked = strings.Contains(strings.ToLower(value), "chunked")
		case "connection":
			keep = !strings.EqualFold(value, "close")
		}
	}
	switch {
	case chunked:
		for {
			sizeLine, err := in.ReadString('\n')
			if err != nil {
				return 0, false, err
			}
			size, err := strconv.ParseInt(strings.TrimSpace(strings.SplitN(sizeLine, ";", 2)[0]), 16, 64)
			if err != nil {
				return 0, false, err
			}
			if _, err := in.Discard(int(size) + 2); err != nil { // the chunk and its CRLF
				return 0, false, err
			}
			if size == 0 {
				break
			}
		}
	case length >= 0:
		if _, err := in.Discard(length); err != nil {
			return 0, false, err
		}
	default: // no length: the body ends with the connection
		_, err := io.Copy(io.Discard, in)
		return status, false, err
	}
	return status, keep, nil
}

// cpuSeconds is the CPU time this process has used so far, user and system.
func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return float64(usage.Utime.Nano()+usage.Stime.Nano()) / 1e9
}

func main() {
	address := flag.String("addr", "127.0.0.1:8080", "host:port, loopback only")
	concurrency := flag.Int("c", 1, "workers, each on its own connection")
	seconds := flag.Float64("d", 10, "seconds to run")
	flag.Parse()
	host, _, err := net.SplitHostPort(*address)
	if err != nil || !(strings.HasPrefix(host, "127.") || host == "localhost") {
		fmt.Fprintln(os.Stderr, "loadgen: -addr must be a loopback host:port")
		os.Exit(2)
	}

	var pool [][]byte
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for scanner.Scan() {
		var r request
		if err := json.Unmarshal(scanner.Bytes(), &r); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: a request line:", err)
			os.Exit(2)
		}
		pool = append(pool, serialise(r, *address))
	}

	cpuBefore := cpuSeconds()
	var next atomic.Int64
	latencies := make([][]int64, *concurrency)
	statuses := make([]map[int]int, *concurrency)
	started := time.Now()
	deadline := started.Add(time.Duration(*seconds * float64(time.Second)))
	var wg sync.WaitGroup
	for w := 0; w < *concurrency; w++ {
		statuses[w] = map[int]int{}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var conn net.Conn
			var in *bufio.Reader
			for time.Now().Before(deadline) {
				i := next.Add(1) - 1
				if i >= int64(len(pool)) {
					break
				}
				t0 := time.Now()
				if conn == nil {
					dialled, err := net.Dial("tcp", *address)
					if err != nil {
						statuses[w][0]++
						continue
					}
					conn, in = dialled, bufio.NewReaderSize(dialled, 64<<10)
				}
				status, keep := 0, false
				if _, err := conn.Write(pool[i]); err == nil {
					status, keep, _ = readResponse(in)
				}
				latencies[w] = append(latencies[w], time.Since(t0).Microseconds())
				statuses[w][status]++
				if !keep || status == 0 {
					conn.Close()
					conn = nil
				}
			}
			if conn != nil {
				conn.Close()
			}
		}(w)
	}
	wg.Wait()
	out := report{
		Seconds:    time.Since(started).Seconds(),
		CPUSeconds: cpuSeconds() - cpuBefore,
		Statuses:   map[string]int{},
	}
	for w := range latencies {
		out.LatenciesUs = append(out.LatenciesUs, latencies[w]...)
		for status, n := range statuses[w] {
			out.Statuses[strconv.Itoa(status)] += n
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
