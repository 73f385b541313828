package worker

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/backfill/backfill/chunk"
)

// crew is the set of workers a Run keeps at the pool's size, which Resize
// changes while it runs: a worker added starts at once, with a connection
// and a stage of its own when it takes its first chunk; a worker retired
// finishes the chunk it holds, closes its connection and exits. No chunk is
// given back or taken twice: a worker decides to retire only between chunks.
type crew struct {
	mu sync.Mutex
	// target is the size asked for (Config.Workers, then Resize).
	target int
	// running counts the workers of the Run under way, retiring counts
	// those of them that have decided to leave and hold no chunk.
	running, retiring int
	// spawn starts one worker of the Run under way; nil when no Run is,
	// or when its workers have all ended (no worker can be added to a Run
	// that is returning).
	spawn func()
	// wake is closed when the target drops, so that workers waiting for a
	// chunk look at it again, and then replaced.
	wake chan struct{}
	in   <-chan *chunk.Chunk // the Run's input, for Pending and Capacity

	busy   atomic.Int64 // workers inside a chunk
	waited atomic.Int64 // nanoseconds workers have waited for the limiter or the throttle
	log    func(workers int)
}

// start begins a Run: spawn starts one worker on it. The first workers start
// under the lock, so none of them can end before all of them are counted.
func (c *crew) start(in <-chan *chunk.Chunk, spawn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.in, c.spawn, c.wake = in, spawn, make(chan struct{})
	c.running, c.retiring = 0, 0
	c.fill()
}

// stop ends a Run, whose workers have all returned.
func (c *crew) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.spawn, c.in = nil, nil
}

// fill starts workers until the crew is at its target; c.mu is held.
func (c *crew) fill() {
	if c.spawn == nil {
		return
	}
	for c.running-c.retiring < c.target {
		c.running++
		c.spawn()
	}
}

// resize sets the target, adding workers at once or waking idle ones so
// that as many as are too many retire; from, when not nil, is the target
// the caller saw, and nothing changes unless it still is. It reports
// whether the target changed.
func (c *crew) resize(to int, from *int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if from != nil && *from != c.target || to == c.target {
		return false
	}
	grow := to > c.target
	c.target = to
	if c.spawn == nil {
		return true
	}
	if grow {
		c.fill()
		c.log(c.target)
	} else if c.running-c.retiring > c.target {
		close(c.wake)
		c.wake = make(chan struct{})
	}
	return true
}

// stay is asked by a worker between chunks: retire is true when the crew
// has more workers than its target, and this one is to leave; otherwise
// wake is closed when the target drops.
func (c *crew) stay() (wake <-chan struct{}, retire bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running-c.retiring > c.target {
		c.retiring++
		return nil, true
	}
	return c.wake, false
}

// leave is a worker's end, after it gave its connection up.
func (c *crew) leave(retired bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running--
	if retired {
		c.retiring--
		if c.retiring == 0 && c.running == c.target {
			c.log(c.target)
		}
	}
	if c.running == 0 {
		c.spawn = nil // the Run is returning: a later Resize only sets the size
	}
}

// Resize sets the number of workers, at once if the pool is running (else
// for its next Run): new workers start now; when there are too many,
// workers retire as they finish the chunk they hold, each closing its
// destination connection, so the destination's sessions follow the size.
// The pool logs "worker pool resized" once it has the new size.
func (p *Pool) Resize(workers int) error {
	if workers < 1 {
		return fmt.Errorf("workers must be positive, got %d", workers)
	}
	p.crew.resize(workers, nil)
	return nil
}

// ResizeFrom is Resize from a size the caller saw: it changes nothing, and
// reports false, when the pool's size is no longer from (someone else
// resized it since).
func (p *Pool) ResizeFrom(from, workers int) bool {
	return workers >= 1 && p.crew.resize(workers, &from)
}

// Target is the number of workers the pool keeps: Config.Workers, or the
// last Resize.
func (p *Pool) Target() int {
	p.crew.mu.Lock()
	defer p.crew.mu.Unlock()
	return p.crew.target
}

// Size is the number of workers running now: after a Resize down, it
// counts the workers still finishing their chunk before they retire. 0
// when the pool is not running.
func (p *Pool) Size() int {
	p.crew.mu.Lock()
	defer p.crew.mu.Unlock()
	return p.crew.running - p.crew.retiring
}

// Busy is the number of workers inside a chunk: from taking it off the
// channel, through waiting for the limiter, to its commit.
func (p *Pool) Busy() int { return int(p.crew.busy.Load()) }

// Pending is the number of chunks waiting in the running pool's input
// channel; Capacity is that channel's size. Both are 0 when the pool is not
// running.
func (p *Pool) Pending() int {
	p.crew.mu.Lock()
	defer p.crew.mu.Unlock()
	return len(p.crew.in)
}

// Capacity is the size of the running pool's input channel (see Pending).
func (p *Pool) Capacity() int {
	p.crew.mu.Lock()
	defer p.crew.mu.Unlock()
	return cap(p.crew.in)
}

// Waited is how long the pool's workers have waited for the rate
// limiter's tokens or the throttle (Config.Throttle), added up over the
// workers, since the pool was made.
func (p *Pool) Waited() time.Duration { return time.Duration(p.crew.waited.Load()) }
