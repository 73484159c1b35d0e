package e2e

import (
	"fmt"
	"time"
)

// BenchRow prints one row of the control-plane comparison `make bench`
// collects: what was measured, the figure, the target, and the baseline
// measured in the same run with the ratio of the figure to it.
func BenchRow(what string, got time.Duration, target string, baselineWhat string, baseline time.Duration) {
	ratio := "-"
	if baseline > 0 {
		ratio = fmt.Sprintf("%.1fx", float64(got)/float64(baseline))
	}
	fmt.Printf("BENCHROW\t%s\t%s\t%s\t%s %s\t%s\n", what, round(got), target, baselineWhat, round(baseline), ratio)
}

func round(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}
