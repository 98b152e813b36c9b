package demo

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"
)

// interfaceReport contains what the thread in the new network namespace observed.
type interfaceReport struct {
	// namespace is the thread's network namespace, as /proc/thread-self/ns/net names it,
	// such as net:[4026532301].
	namespace string
	// index is the interface index after TUNSETIFF.
	index int
	// linkOutput is the output of `ip -details link show dev <name>` in the namespace.
	linkOutput string
	// goneAfterClose is true when the interface no longer existed after the file was closed.
	goneAfterClose bool
}

// createInterfaceInNewNamespace opens hostPath and creates the tun interface name in a new
// network namespace, as a container given the device would. It runs ipPath in that namespace
// while the interface exists, which is until the file descriptor closes.
func createInterfaceInNewNamespace(hostPath, name, ipPath string) (interfaceReport, error) {
	type result struct {
		report interfaceReport
		err    error
	}
	results := make(chan result, 1)
	go func() {
		// unshare(CLONE_NEWNET) moves only the calling thread. The goroutine never unlocks, so
		// the Go runtime ends the thread when the goroutine returns, and no other goroutine
		// ever runs in the new namespace.
		runtime.LockOSThread()
		report, err := createInterfaceOnThread(hostPath, name, ipPath)
		results <- result{report: report, err: err}
	}()
	outcome := <-results
	return outcome.report, outcome.err
}

// createInterfaceOnThread does the work of createInterfaceInNewNamespace on a thread locked
// to the calling goroutine.
func createInterfaceOnThread(hostPath, name, ipPath string) (interfaceReport, error) {
	var report interfaceReport
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return report, fmt.Errorf("unshare(CLONE_NEWNET) failed: %w", err)
	}
	namespace, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return report, fmt.Errorf("failed to read the new network namespace: %w", err)
	}
	report.namespace = namespace

	fd, err := unix.Open(hostPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return report, fmt.Errorf("failed to open %s: %w", hostPath, err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = unix.Close(fd)
		}
	}()

	request, err := unix.NewIfreq(name)
	if err != nil {
		return report, fmt.Errorf("invalid interface name %q: %w", name, err)
	}
	request.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, request); err != nil {
		return report, fmt.Errorf("TUNSETIFF %s on %s failed: %w", name, hostPath, err)
	}

	// The interface lives as long as fd is open, so inspect it before closing fd.
	created, err := net.InterfaceByName(name)
	if err != nil {
		return report, fmt.Errorf("%s does not exist after TUNSETIFF: %w", name, err)
	}
	report.index = created.Index
	// A child process starts in the network namespace of the thread that forks it, and the
	// fork runs on this locked thread.
	output, err := exec.Command(ipPath, "-details", "link", "show", "dev", name).CombinedOutput()
	report.linkOutput = string(output)
	if err != nil {
		return report, fmt.Errorf("`ip -details link show dev %s` failed: %w: %s", name, err,
			output)
	}

	closed = true
	if err := unix.Close(fd); err != nil {
		return report, fmt.Errorf("failed to close %s: %w", hostPath, err)
	}
	remaining, err := net.Interfaces()
	if err != nil {
		return report, fmt.Errorf("failed to list the interfaces after closing %s: %w",
			hostPath, err)
	}
	report.goneAfterClose = !slices.ContainsFunc(remaining, func(other net.Interface) bool {
		return other.Name == name
	})
	return report, nil
}
