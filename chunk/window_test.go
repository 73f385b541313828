package chunk

import (
	"context"
	"testing"
	"time"
)

// TestWindowHoldsItsSize: a full window keeps the next Enter waiting until
// a chunk holding a slot is released, a slot given back, or the window
// grows; a smaller window takes effect as chunks leave.
func TestWindowHoldsItsSize(t *testing.T) {
	w := NewWindow(2)
	a, b := &Chunk{}, &Chunk{}
	for _, c := range []*Chunk{a, b} {
		if err := w.Enter(t.Context()); err != nil {
			t.Fatal(err)
		}
		w.Hand(c)
	}
	entered := make(chan error, 1)
	go func() { entered <- w.Enter(t.Context()) }()
	select {
	case err := <-entered:
		t.Fatalf("entered a full window (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	a.Release()
	if err := <-entered; err != nil {
		t.Fatal(err)
	}
	a.Release() // a second release gives back nothing
	if got := w.Held(); got != 2 {
		t.Fatalf("held %d after one of two chunks released and one more entered; want 2", got)
	}

	w.Resize(1)
	b.Release()
	if got := w.Held(); got != 1 {
		t.Fatalf("held %d; want 1", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := w.Enter(ctx); err == nil {
		t.Fatal("entered a window resized to 1 that holds 1")
	}
	go func() { entered <- w.Enter(t.Context()) }()
	w.Resize(2)
	if err := <-entered; err != nil {
		t.Fatal(err)
	}
	w.Leave()
	w.Leave()
	if got := w.Held(); got != 0 {
		t.Fatalf("held %d after every slot was given back", got)
	}

	w.Follow(1)
	w.Resize(0) // lifted: Follow no longer bounds it
	w.Follow(1)
	for range 5 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		err := w.Enter(ctx)
		cancel()
		if err != nil {
			t.Fatalf("a window whose bound was lifted kept Enter waiting with %d held: %v", w.Held(), err)
		}
	}
}

// TestNilWindowHoldsAnything: without a window nothing waits.
func TestNilWindowHoldsAnything(t *testing.T) {
	var w *Window
	for range 3 {
		if err := w.Enter(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	c := &Chunk{}
	w.Hand(c)
	c.Release()
	w.Leave()
	w.Resize(4)
}
