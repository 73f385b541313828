package chunk

import (
	"context"
	"sync"
)

// Window bounds the chunks of a job that are read and not yet written:
// the paginator enters it before it reads a page, and the chunk it reads
// leaves it when released. A window as large as the pool keeps the
// paginator from reading ahead of the workers, so that a page is read
// only while no chunk is being written by the worker that will take it:
// on a server without spare cores, the read of the next chunk beside the
// write of this one is one more busy backend the application's sessions
// queue behind. Its size follows the pool's (Follow) until its bound is
// lifted (Resize). It is safe for concurrent use, and a nil Window holds
// any number of chunks.
type Window struct {
	mu   sync.Mutex
	size int
	held int
	// moved is closed, and replaced, each time a slot frees or the window
	// grows: what a paginator waiting to enter waits on.
	moved chan struct{}
}

// NewWindow returns a window of size chunks (at least one).
func NewWindow(size int) *Window {
	return &Window{size: max(size, 1), moved: make(chan struct{})}
}

// Enter takes a slot, waiting while the window is full; it returns the
// context's error if that ends first.
func (w *Window) Enter(ctx context.Context) error {
	if w == nil {
		return nil
	}
	for {
		w.mu.Lock()
		if w.size <= 0 || w.held < w.size {
			w.held++
			w.mu.Unlock()
			return nil
		}
		moved := w.moved
		w.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Leave gives back a slot Enter took that no chunk holds: the page read
// nothing to write, or its read failed.
func (w *Window) Leave() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held--
	w.wake()
}

// Hand gives the slot Enter took to c, which leaves the window when it is
// released.
func (w *Window) Hand(c *Chunk) {
	if w != nil {
		c.window = w
	}
}

// Resize sets the number of chunks the window holds; zero or less lifts
// the bound. A smaller window takes effect as chunks leave it.
func (w *Window) Resize(size int) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.size = size
	w.wake()
}

// Follow resizes a bounded window to size (at least one), and leaves one
// whose bound is lifted as it is: the pool's size changes whether or not
// the window still follows it.
func (w *Window) Follow(size int) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.size > 0 {
		w.size = max(size, 1)
		w.wake()
	}
}

// Bound is the most chunks the window holds, or zero when nothing bounds
// them (a nil window, or one whose bound is lifted).
func (w *Window) Bound() int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(w.size, 0)
}

// Held is the number of chunks in the window now.
func (w *Window) Held() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.held
}

func (w *Window) wake() {
	close(w.moved)
	w.moved = make(chan struct{})
}
