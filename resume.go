package backfill

import (
	"github.com/backfill/backfill/checkpoint"
	"github.com/backfill/backfill/paginator"
)

// resumeBounds hands the checkpoint's resume state to the paginator: the
// bounds of the committed runs and the pieces of split chunks, a few rows
// however many chunks the job committed.
func resumeBounds(res checkpoint.Resume) ([]paginator.Bound, []paginator.Range) {
	bounds := make([]paginator.Bound, len(res.Bounds))
	for i, b := range res.Bounds {
		bounds[i] = paginator.Bound{Key: b.Key, Delta: b.Delta}
	}
	split := make([]paginator.Range, len(res.Split))
	for i, c := range res.Split {
		split[i] = paginator.Range{After: c.After, Last: c.Last, Seq: c.Seq, SplitLast: c.SplitLast}
	}
	return bounds, split
}
