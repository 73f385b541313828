package chunk

// Chunk is one page of source rows: what the paginator reads and a worker
// writes.
type Chunk struct {
	Seq   int64
	After []string // exclusive lower bound; nil for the first chunk of the table
	First []string
	Last  []string
	Rows  [][]any    // source values in the order the paginator reads the columns; empty rows with Tuples
	Keys  [][]string // each row's key, for splitting the chunk and naming failed rows
	// Tuples holds, for a straight copy, each row as a tuple of a binary
	// COPY stream of the destination's columns: the source's bytes,
	// undecoded and unboxed. Its Rows are then empty.
	Tuples  [][]byte
	storage Storage // where Rows, Keys, First and Last live, until Release
	window  *Window // the window the chunk holds a slot of until Release; nil for none
}

// Raw is a value as the source sent it, in its type's binary form, never
// decoded: a column the transform only moves reaches the destination byte
// for byte. A chunk's rows hold *Raw, pointing into storage the chunk
// shares, so a value costs no allocation of its own.
type Raw []byte

// Storage holds a chunk's rows, keys and bounds in memory that serves a
// later chunk once this one is released: the paginator's.
type Storage interface {
	// Recycle takes the memory back for a later chunk; nothing reads the
	// chunk's rows, keys or bounds any more.
	Recycle()
}

// InStorage returns an empty chunk whose rows, keys and bounds live in s
// until it is released.
func InStorage(s Storage) *Chunk { return &Chunk{storage: s} }

// Release hands the chunk's storage back to its paginator for a later
// page, and its slot back to its window, once the chunk is written and
// nothing will read its rows, keys or bounds again. Without it the
// storage is left to the garbage collector, which a copy of 10⁹ rows keeps
// busy.
func (c *Chunk) Release() {
	if c.window != nil {
		c.window.Leave()
		c.window = nil
	}
	if c.storage == nil {
		return
	}
	c.storage.Recycle()
	c.storage, c.Rows, c.Keys, c.Tuples, c.First, c.Last = nil, nil, nil, nil, nil, nil
}
