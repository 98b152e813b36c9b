package conformance

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopTimeout bounds how long a tun-manager process may take to exit after a signal.
const stopTimeout = 10 * time.Second

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
	info, err := os.Stat(absolute)
	if err != nil {
		t.Fatalf("tun-manager binary not found at %s (%s): %v; run `cargo build` in the "+
			"repository root or set TUN_MANAGER_BIN to the binary", absolute, source, err)
	}
	if info.IsDir() || info.Mode().Perm()&0o111 == 0 {
		t.Fatalf("tun-manager binary %s (%s) is not an executable file", absolute, source)
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

// tunManager is one running tun-manager process.
type tunManager struct {
	name    string
	command *exec.Cmd
	output  *lockedBuffer
	done    chan struct{}
	// waitErr is the result of cmd.Wait, set before done is closed.
	waitErr error
}

// startTunManager starts tun-manager with args and debug logging. The process is stopped when
// the test ends, and its output is logged if the test failed.
func startTunManager(t *testing.T, args ...string) *tunManager {
	t.Helper()
	binary := tunManagerBinary(t)
	args = append([]string{"--log-level", "debug"}, args...)
	output := &lockedBuffer{}
	command := exec.Command(binary, args...)
	command.Stdout = output
	command.Stderr = output
	// Kill the daemon if the test binary dies without running its cleanups. Pdeathsig fires
	// when the thread that started the process exits. The Go runtime ends a thread only when
	// a goroutine locked to it with runtime.LockOSThread returns without unlocking.
	command.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	if err := command.Start(); err != nil {
		t.Fatalf("failed to start %s %s: %v", binary, strings.Join(args, " "), err)
	}
	process := &tunManager{
		name:    fmt.Sprintf("tun-manager (pid %d, flags %s)", command.Process.Pid, strings.Join(args, " ")),
		command: command,
		output:  output,
		done:    make(chan struct{}),
	}

	go func() {
		process.waitErr = command.Wait()
		close(process.done)
	}()

	t.Cleanup(func() {
		if !process.exited() {
			if err := process.signalAndWait(syscall.SIGTERM); err != nil {
				t.Errorf("%v", err)
			}
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", process.name, process.output.String())
		}
	})
	return process
}

// exited reports whether the process has exited.
func (p *tunManager) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// state describes whether the process runs, for wait messages.
func (p *tunManager) state() string {
	if !p.exited() {
		return p.name + " is running"
	}
	return fmt.Sprintf("%s exited: %v", p.name, p.command.ProcessState)
}

// signalAndWait sends signal and waits up to stopTimeout for the exit. If the process does not
// exit in time it is killed and an error is returned.
func (p *tunManager) signalAndWait(signal syscall.Signal) error {
	if err := p.command.Process.Signal(signal); err != nil && !p.exited() {
		return fmt.Errorf("failed to send %v to %s: %w", signal, p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		_ = p.command.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of %v; killed it", p.name, stopTimeout, signal)
	}
}

// terminate sends SIGTERM, waits for the exit and fails the test unless the exit code is 0.
func (p *tunManager) terminate(t *testing.T) {
	t.Helper()
	if err := p.signalAndWait(syscall.SIGTERM); err != nil {
		t.Fatalf("%v", err)
	}
	if code := p.command.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited with code %d after SIGTERM, expected 0", p.name, code)
	}
}

// kill sends SIGKILL, as a crash or an OOM kill would, and waits for the exit.
func (p *tunManager) kill(t *testing.T) {
	t.Helper()
	if err := p.signalAndWait(syscall.SIGKILL); err != nil {
		t.Fatalf("%v", err)
	}
}
