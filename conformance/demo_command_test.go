package conformance

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anza-labs/tun-manager/conformance/internal/kubeletdir"
)

// Exit codes of cmd/demo that scripts/demo relies on.
const (
	demoExitInUse       = 3
	demoExitInterrupted = 130
)

// buildDemo builds cmd/demo into bin/demo, where scripts/demo builds it too, and returns its
// absolute path. go build skips the link when that file is up to date, which saves seconds.
func buildDemo(t *testing.T) string {
	t.Helper()
	goBinary, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found on PATH, which building cmd/demo needs: %v", err)
	}
	binary, err := filepath.Abs(filepath.Join("bin", "demo"))
	if err != nil {
		t.Fatalf("invalid path bin/demo: %v", err)
	}
	output, err := exec.Command(goBinary, "build", "-o", binary, "./cmd/demo").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/demo failed: %v\n%s", err, output)
	}
	return binary
}

// requiredKubernetesVersion returns the version of k8s.io/kubernetes that go.mod requires.
func requiredKubernetesVersion(t *testing.T) string {
	t.Helper()
	output, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}",
		"k8s.io/kubernetes").Output()
	if err != nil {
		t.Fatalf("go list -m k8s.io/kubernetes failed: %v", err)
	}
	return strings.TrimSpace(string(output))
}

// runDemo runs the demo binary with args and returns its stdout, stderr and exit code.
func runDemo(t *testing.T, binary string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	command := exec.Command(binary, args...)
	command.Stdout = &out
	command.Stderr = &errOut
	err := command.Run()
	var exitError *exec.ExitError
	if err != nil && !errors.As(err, &exitError) {
		t.Fatalf("failed to run %s %v: %v", binary, args, err)
	}
	return out.String(), errOut.String(), command.ProcessState.ExitCode()
}

// TestDemoCommand builds cmd/demo once and checks the contract scripts/demo relies on: the
// first line, and the exit codes for success, a running kubelet and an interrupt.
func TestDemoCommand(t *testing.T) {
	demo := buildDemo(t)
	t.Run("walkthrough", func(t *testing.T) { testDemoWalkthroughCommand(t, demo) })
	t.Run("kubelet running", func(t *testing.T) { testDemoRejectsKubelet(t, demo) })
	t.Run("interrupt", func(t *testing.T) { testDemoInterrupt(t, demo) })
}

func testDemoWalkthroughCommand(t *testing.T, demo string) {
	plugin := tunManagerBinary(t)
	rejectLiveSockets(t)
	before := pluginDirState(t)

	stdout, stderr, code := runDemo(t, demo, "--check")
	if code != 0 {
		t.Errorf("demo --check exited with %d, expected 0; stderr: %s", code, stderr)
	}
	if stdout+stderr != "" {
		t.Errorf("demo --check printed %q, expected nothing", stdout+stderr)
	}

	stdout, stderr, code = runDemo(t, demo, plugin)
	if code != 0 {
		t.Fatalf("demo exited with %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	firstLine, _, _ := strings.Cut(stdout, "\n")
	expected := "Using the kubelet's device manager from Kubernetes " +
		requiredKubernetesVersion(t)
	if firstLine != expected {
		t.Errorf("demo's first line is %q, expected %q", firstLine, expected)
	}
	if after := pluginDirState(t); after != before {
		t.Errorf("demo left %s changed; before:\n%s\nafter:\n%s", kubeletPluginDir, before, after)
	}
}

func testDemoRejectsKubelet(t *testing.T, demo string) {
	plugin := tunManagerBinary(t)
	claimKubeletPluginDir(t)
	socket := filepath.Join(kubeletPluginDir, kubeletdir.KubeletSocketName)
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatalf("failed to listen on %s: %v", socket, err)
	}
	defer func() { _ = listener.Close() }()
	before := pluginDirState(t)

	for _, args := range [][]string{{"--check"}, {plugin}} {
		stdout, stderr, code := runDemo(t, demo, args...)
		if code != demoExitInUse {
			t.Errorf("demo %v exited with %d, expected %d; stderr: %s", args, code,
				demoExitInUse, stderr)
		}
		if stdout != "" {
			t.Errorf("demo %v printed steps although a kubelet serves %s:\n%s", args, socket,
				stdout)
		}
		reason := strings.TrimSuffix(stderr, "\n")
		if strings.Contains(reason, "\n") {
			t.Errorf("demo %v printed %q, expected one line", args, stderr)
		}
		if !strings.Contains(reason, "a kubelet is serving "+socket) {
			t.Errorf("demo %v printed %q, expected it to name the kubelet on %s", args, stderr,
				socket)
		}
	}
	if after := pluginDirState(t); after != before {
		t.Errorf("demo changed %s although it rejected it; before:\n%s\nafter:\n%s",
			kubeletPluginDir, before, after)
	}
}

func testDemoInterrupt(t *testing.T, demo string) {
	rejectLiveSockets(t)
	before := pluginDirState(t)
	// A tun-manager stand-in that never registers, so the demo waits until the signal.
	fake := filepath.Join(t.TempDir(), "never-registers")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatalf("failed to write %s: %v", fake, err)
	}

	command := exec.Command(demo, fake)
	stdout, err := command.StdoutPipe()
	if err != nil {
		t.Fatalf("failed to create the stdout pipe: %v", err)
	}
	var stderr lockedBuffer
	command.Stderr = &stderr
	if err := command.Start(); err != nil {
		t.Fatalf("failed to start %s: %v", demo, err)
	}
	var steps bytes.Buffer
	scanner := bufio.NewScanner(stdout)
	started := false
	for !started && scanner.Scan() {
		steps.WriteString(scanner.Text() + "\n")
		started = strings.HasPrefix(scanner.Text(), "==> Start tun-manager")
	}
	if !started {
		_ = command.Wait()
		t.Fatalf("demo ended before it started tun-manager\nstdout:\n%s\nstderr:\n%s",
			steps.String(), stderr.String())
	}
	// Let the demo enter its wait for the registration before the signal arrives.
	time.Sleep(200 * time.Millisecond)
	if err := command.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("failed to send SIGINT to the demo: %v", err)
	}
	for scanner.Scan() {
		steps.WriteString(scanner.Text() + "\n")
	}
	_ = command.Wait()

	if code := command.ProcessState.ExitCode(); code != demoExitInterrupted {
		t.Errorf("demo exited with %d after SIGINT, expected %d\nstdout:\n%s\nstderr:\n%s",
			code, demoExitInterrupted, steps.String(), stderr.String())
	}
	if !strings.Contains(steps.String(), "Stopped tun-manager") {
		t.Errorf("demo did not stop tun-manager after SIGINT:\n%s", steps.String())
	}
	if !strings.Contains(steps.String(), "Stopped the device manager") {
		t.Errorf("demo did not stop the device manager after SIGINT:\n%s", steps.String())
	}
	if after := pluginDirState(t); after != before {
		t.Errorf("demo left %s changed after SIGINT; before:\n%s\nafter:\n%s", kubeletPluginDir,
			before, after)
	}
}
