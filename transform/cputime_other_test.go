//go:build !unix

package transform

import "time"

// cpuTime is unknown here; BenchmarkApply then reports no rows/s.
func cpuTime() time.Duration { return 0 }
