package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ShutdownTimeout is how long a stopping server waits for the scrapes in
// flight before it closes their connections.
const ShutdownTimeout = 5 * time.Second

// ServerConfig says what a Server serves and where.
type ServerConfig struct {
	// Addr is HOST:PORT to listen on; port 0 takes a free port (see
	// Server.Addr).
	Addr    string
	Metrics *Metrics
	// Health reports whether the runner holds its job: nil while it does,
	// else why not. /healthz answers 200 or 503 with that reason.
	Health func() error
}

// Server serves /metrics and /healthz until its context ends.
type Server struct {
	listener net.Listener
	done     chan struct{}
	err      error
}

// Serve listens on cfg.Addr at once, so that an address in use is an error
// of the call, then serves in the background until ctx ends, when it shuts
// down: Wait returns after that.
func Serve(ctx context.Context, cfg ServerConfig) (*Server, error) {
	if cfg.Metrics == nil || cfg.Health == nil {
		return nil, errors.New("metrics server: Metrics and Health are required")
	}
	var lc net.ListenConfig
	listener, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", cfg.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Metrics.Gatherer(), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := cfg.Health(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	httpServer := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s := &Server{listener: listener, done: make(chan struct{})}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpServer.Serve(listener) }()
	go func() {
		defer close(s.done)
		select {
		case err := <-serveErr:
			s.err = fmt.Errorf("serve metrics on %s: %w", listener.Addr(), err)
		case <-ctx.Done():
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
			defer cancel()
			if err := httpServer.Shutdown(stopCtx); err != nil {
				s.err = fmt.Errorf("shut the metrics server on %s down: %w", listener.Addr(), err)
			}
			<-serveErr // http.ErrServerClosed once Shutdown has begun
		}
	}()
	return s, nil
}

// Addr is the address the server listens on, with the port it took.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Wait returns once the server has stopped: after its context ended and the
// scrapes in flight finished, or when serving failed, with that error.
func (s *Server) Wait() error {
	<-s.done
	return s.err
}
