package paginator

// Raw is a value as the source sent it, in its type's binary form, never
// decoded: a column the transform only moves (ReadColumn.Raw) reaches the
// destination byte for byte. A chunk's rows hold *Raw, pointing into
// storage the chunk shares, so a value costs no allocation of its own.
type Raw []byte

// rowStore holds a chunk's rows: their values, keys and raw bytes in a few
// large allocations instead of several per row. Slices it hands out are
// never moved: a block that fills is kept and a new one begun.
type rowStore struct {
	values []any
	keys   []string
	raws   []Raw
	bytes  []byte
	// sizes of the next blocks, from the chunk's expected row count
	rows, width, rawWidth int
}

// rawBlock is the least a block of raw bytes holds: small enough to waste
// little at a chunk's end, large enough that a chunk needs few.
const rawBlock = 64 << 10

func newRowStore(rows, width, rawWidth int) *rowStore {
	return &rowStore{rows: max(rows, 1), width: width, rawWidth: rawWidth}
}

// row returns room for one row's values and key.
func (s *rowStore) row(nk int) ([]any, []string) {
	if len(s.values)+s.width > cap(s.values) {
		s.values = make([]any, 0, s.rows*s.width)
	}
	if len(s.keys)+nk > cap(s.keys) {
		s.keys = make([]string, 0, s.rows*nk)
	}
	n, k := len(s.values), len(s.keys)
	s.values, s.keys = s.values[:n+s.width], s.keys[:k+nk]
	return s.values[n : n+s.width : n+s.width], s.keys[k : k+nk : k+nk]
}

// raw copies b, which the driver reuses for the next row, and returns it
// as a value.
func (s *rowStore) raw(b []byte) *Raw {
	if len(s.raws) == cap(s.raws) {
		s.raws = make([]Raw, 0, max(s.rows*s.rawWidth, 1))
	}
	if len(b) > cap(s.bytes)-len(s.bytes) {
		s.bytes = make([]byte, 0, max(rawBlock, len(b)))
	}
	n := len(s.bytes)
	s.bytes = append(s.bytes, b...)
	s.raws = append(s.raws, Raw(s.bytes[n:len(s.bytes):len(s.bytes)]))
	return &s.raws[len(s.raws)-1]
}
