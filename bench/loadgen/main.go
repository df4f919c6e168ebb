// loadgen: a small closed-loop HTTP load generator for bench/registry.py.
//
// N workers each keep one keep-alive connection busy with the same request for a fixed
// time; the result (requests, errors, seconds) is printed as one JSON line. Written in
// Go so that on a 2-core machine the client costs far less CPU than the servers it
// measures.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	url := flag.String("url", "", "URL to request")
	method := flag.String("method", "GET", "HTTP method")
	concurrency := flag.Int("c", 32, "concurrent connections")
	duration := flag.Duration("d", 5*time.Second, "how long to run")
	var hdrs headers
	flag.Var(&hdrs, "H", "header 'Name: value' (repeatable)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
	}
	transport := &http.Transport{
		MaxIdleConns:        *concurrency,
		MaxIdleConnsPerHost: *concurrency,
		MaxConnsPerHost:     *concurrency,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: transport}
	var ok, failed int64
	deadline := time.Now().Add(*duration)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				req, err := http.NewRequest(*method, *url, nil)
				if err != nil {
					atomic.AddInt64(&failed, 1)
					return
				}
				for _, h := range hdrs {
					name, value, _ := strings.Cut(h, ":")
					req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
				}
				resp, err := client.Do(req)
				if err != nil {
					atomic.AddInt64(&failed, 1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					atomic.AddInt64(&ok, 1)
				} else {
					atomic.AddInt64(&failed, 1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	json.NewEncoder(os.Stdout).Encode(map[string]any{"requests": ok, "errors": failed, "seconds": elapsed})
}
