package conformance

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/anza-labs/tun-manager/conformance/internal/tunmanager"
)

// tunManagerBinary returns the absolute path of the binary under test: $TUN_MANAGER_BIN, or
// ../target/debug/tun-manager relative to this module, where `cargo build` puts it.
func tunManagerBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv("TUN_MANAGER_BIN")
	source := "TUN_MANAGER_BIN"
	if path == "" {
		path = filepath.Join("..", "target", "debug", "tun-manager")
		source = "the default path"
	}
	absolute, err := filepath.Abs(path)
	if err != nil {
		t.Fatalf("invalid tun-manager path %q from %s: %v", path, source, err)
	}
	if err := tunmanager.CheckBinary(absolute); err != nil {
		t.Fatalf("%v (path from %s); run `cargo build` in the repository root or set "+
			"TUN_MANAGER_BIN to the binary", err, source)
	}
	return absolute
}

// lockedBuffer collects a process's output; exec copies stdout and stderr from two goroutines.
type lockedBuffer struct {
	mu     sync.Mutex
	buffer bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buffer.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buffer.String()
}

// tunManager is one running tun-manager process and its collected output.
type tunManager struct {
	*tunmanager.Process
	output *lockedBuffer
}

// startTunManager starts tun-manager with args and debug logging. The process is stopped when
// the test ends, and its output is logged if the test failed.
func startTunManager(t *testing.T, args ...string) *tunManager {
	t.Helper()
	binary := tunManagerBinary(t)
	args = append([]string{"--log-level", "debug"}, args...)
	output := &lockedBuffer{}
	process, err := tunmanager.Start(binary, args, output, output)
	if err != nil {
		t.Fatalf("%v", err)
	}
	plugin := &tunManager{Process: process, output: output}

	t.Cleanup(func() {
		if !plugin.Exited() {
			if err := plugin.SignalAndWait(syscall.SIGTERM); err != nil {
				t.Errorf("%v", err)
			}
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", plugin.Name, plugin.output.String())
		}
	})
	return plugin
}

// terminate sends SIGTERM, waits for the exit and fails the test unless the exit code is 0.
func (p *tunManager) terminate(t *testing.T) {
	t.Helper()
	if err := p.SignalAndWait(syscall.SIGTERM); err != nil {
		t.Fatalf("%v", err)
	}
	if code := p.ProcessState().ExitCode(); code != 0 {
		t.Fatalf("%s exited with code %d after SIGTERM, expected 0", p.Name, code)
	}
}

// kill sends SIGKILL, as a crash or an OOM kill would, and waits for the exit.
func (p *tunManager) kill(t *testing.T) {
	t.Helper()
	if err := p.SignalAndWait(syscall.SIGKILL); err != nil {
		t.Fatalf("%v", err)
	}
}
