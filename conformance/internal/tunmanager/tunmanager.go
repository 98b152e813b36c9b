// Package tunmanager runs the tun-manager binary as a child process.
package tunmanager

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// StopTimeout bounds how long a tun-manager process may take to exit after a signal.
const StopTimeout = 10 * time.Second

// CheckBinary returns an error unless path is an executable file.
func CheckBinary(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("tun-manager binary not found at %s: %w", path, err)
	}
	if info.IsDir() || info.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("tun-manager binary %s is not an executable file", path)
	}
	return nil
}

// Process is one running tun-manager process.
type Process struct {
	// Name names the process with its PID and flags, for messages.
	Name    string
	command *exec.Cmd
	// done is closed when command.Wait has returned and command.ProcessState is set.
	done chan struct{}
}

// Start starts binary with args, in its own process group so that a Ctrl-C in the terminal
// reaches only the caller, which then stops the process itself. The kernel sends the process
// SIGKILL if the caller dies without stopping it.
func Start(binary string, args []string, stdout, stderr io.Writer) (*Process, error) {
	command := exec.Command(binary, args...)
	command.Stdout = stdout
	command.Stderr = stderr
	command.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	process := &Process{command: command, done: make(chan struct{})}

	// Pdeathsig fires when the thread that started the child exits, even while the rest of the
	// caller runs. The Go runtime ends a thread when a goroutine locked to it returns without
	// unlocking, as a goroutine that entered a network namespace does. Starting and waiting
	// from a goroutine locked to its own thread keeps that thread alive, and never reused,
	// until the child exits.
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := command.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		// Wait's error repeats the exit status, which ProcessState records.
		_ = command.Wait()
		close(process.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("failed to start %s %s: %w", binary, strings.Join(args, " "), err)
	}
	process.Name = fmt.Sprintf("tun-manager (pid %d, flags %s)", command.Process.Pid,
		strings.Join(args, " "))
	if len(args) == 0 {
		process.Name = fmt.Sprintf("tun-manager (pid %d, default flags)", command.Process.Pid)
	}
	return process, nil
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ProcessState returns the exit state, or nil while the process runs.
func (p *Process) ProcessState() *os.ProcessState {
	if !p.Exited() {
		return nil
	}
	return p.command.ProcessState
}

// State describes whether the process runs, for wait messages.
func (p *Process) State() string {
	if !p.Exited() {
		return p.Name + " is running"
	}
	return fmt.Sprintf("%s exited: %v", p.Name, p.command.ProcessState)
}

// Signal sends signal to the process. Sending to a process that has exited is not an error.
func (p *Process) Signal(signal syscall.Signal) error {
	if err := p.command.Process.Signal(signal); err != nil && !p.Exited() {
		return fmt.Errorf("failed to send %v to %s: %w", signal, p.Name, err)
	}
	return nil
}

// SignalAndWait sends signal and waits up to StopTimeout for the exit. If the process does not
// exit in time it is killed and an error is returned.
func (p *Process) SignalAndWait(signal syscall.Signal) error {
	if err := p.Signal(signal); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(StopTimeout):
		_ = p.command.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of %v; killed it", p.Name, StopTimeout, signal)
	}
}
