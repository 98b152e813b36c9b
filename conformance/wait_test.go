package conformance

import (
	"testing"
	"time"
)

const (
	// registerTimeout bounds a registration, which includes tun-manager's Register backoff
	// (at most 5 s between attempts) and its socket poll interval.
	registerTimeout = 30 * time.Second
	// pollInterval is how often waitFor checks its condition.
	pollInterval = 20 * time.Millisecond
)

// waitFor polls check until it returns true or timeout passes. On timeout the test fails with
// the condition and the last state that check returned.
func waitFor(t *testing.T, timeout time.Duration, condition string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		done, state := check()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, condition, state)
		}
		<-ticker.C
	}
}
