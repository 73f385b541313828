package paginator

import (
	"unsafe"

	"github.com/backfill/backfill/chunk"
)

// rowStore holds a chunk's rows: their values, keys and raw bytes in a few
// large blocks instead of several allocations per row. A slice it hands
// out is never moved: a block that fills is kept and a new one begun. A
// released store keeps its blocks for the next chunk.
type rowStore struct {
	free                  chan *rowStore // where Release returns it
	rows                  [][]any
	keyRows               [][]string
	tuples                [][]byte // a straight copy's rows (Config.CopyOrder)
	values                blocks[any]
	keys                  blocks[string]
	raws                  blocks[chunk.Raw]
	bytes                 blocks[byte]
	keyText               int64 // bytes of the keys' strings
	width, keyWidth, nRaw int
}

// rawBlock is the least a block of raw bytes holds: small enough to waste
// little at a chunk's end, large enough that a chunk needs few.
const rawBlock = 64 << 10

// store returns a store for a page of up to rows rows: one a released chunk
// left, or a new one.
func (p *Paginator) store(rows int) *rowStore {
	var s *rowStore
	select {
	case s = <-p.free:
	default:
		s = &rowStore{free: p.free, width: len(p.cfg.Columns), keyWidth: len(p.cfg.Key), nRaw: p.rawWidth}
		if p.cfg.CopyOrder != nil {
			s.width, s.nRaw = 0, 0 // the rows are tuples
		}
	}
	if cap(s.rows) < rows { // grown once, not row by row
		s.rows, s.keyRows = make([][]any, 0, rows), make([][]string, 0, rows)
		if p.cfg.CopyOrder != nil {
			s.tuples = make([][]byte, 0, rows)
		}
	}
	s.values.size, s.keys.size = rows*s.width, rows*s.keyWidth
	s.raws.size, s.bytes.size = rows*s.nRaw, rawBlock
	return s
}

// row returns room for one row's values and key, and appends them to the
// store's rows.
func (s *rowStore) row() ([]any, []string) {
	vals, key := s.values.take(s.width), s.keys.take(s.keyWidth)
	s.rows, s.keyRows = append(s.rows, vals), append(s.keyRows, key)
	return vals, key
}

// raw copies b, which the driver reuses for the next row, and returns it
// as a value.
func (s *rowStore) raw(b []byte) *chunk.Raw {
	r := &s.raws.take(1)[0]
	*r = chunk.Raw(s.bytes.take(len(b)))
	copy(*r, b)
	return r
}

// Recycle takes the store back, once its chunk is released, for a later
// page.
func (s *rowStore) Recycle() {
	s.reset()
	select {
	case s.free <- s:
	default: // enough kept already
	}
}

func (s *rowStore) reset() {
	clear(s.rows)
	clear(s.keyRows)
	clear(s.tuples)
	s.rows, s.keyRows, s.tuples = s.rows[:0], s.keyRows[:0], s.tuples[:0]
	s.keyText = 0
	s.values.reset()
	s.keys.reset()
	s.raws.reset()
	s.bytes.reset()
}

// size is the memory the store's rows take: what its blocks handed out,
// the slices that hold the rows, and the text of the keys.
func (s *rowStore) size() int64 {
	n := s.values.used() + s.keys.used() + s.raws.used() + s.bytes.used() + s.keyText
	return n + int64(len(s.rows))*int64(unsafe.Sizeof(s.rows[0])+unsafe.Sizeof(s.keyRows[0])+unsafe.Sizeof([]byte(nil)))
}

// blocks hands out slices of blocks it allocates, and after reset the same
// blocks again.
type blocks[T any] struct {
	list [][]T
	cur  int // the block being filled
	size int // the least a new block holds
}

// take returns n zeroed elements, contiguous and never moved.
func (b *blocks[T]) take(n int) []T {
	for b.cur < len(b.list) {
		blk := b.list[b.cur]
		if len(blk)+n <= cap(blk) {
			b.list[b.cur] = blk[:len(blk)+n]
			return blk[len(blk) : len(blk)+n : len(blk)+n]
		}
		if len(blk) == 0 {
			// too small for n even empty: a larger one replaces it
			b.list = append(b.list[:b.cur], b.list[b.cur+1:]...)
			continue
		}
		b.cur++
	}
	blk := make([]T, n, max(b.size, n, 1))
	b.list = append(b.list, blk)
	b.cur = len(b.list) - 1
	return blk[:n:n]
}

// used is the memory of the elements handed out since the last reset.
func (b *blocks[T]) used() int64 {
	var n int
	for _, blk := range b.list[:min(b.cur+1, len(b.list))] {
		n += len(blk)
	}
	var zero T
	return int64(n) * int64(unsafe.Sizeof(zero))
}

func (b *blocks[T]) reset() {
	for i := range b.list {
		clear(b.list[i])
		b.list[i] = b.list[i][:0]
	}
	b.cur = 0
}
