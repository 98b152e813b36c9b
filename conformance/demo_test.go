package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anza-labs/tun-manager/conformance/internal/demo"
)

// demoTimeout bounds a whole walkthrough, which takes well under a second when it passes.
const demoTimeout = 2 * time.Minute

// pluginDirState describes whether kubeletPluginDir and its parent exist, and the name, mode
// and size of every entry in kubeletPluginDir.
func pluginDirState(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, path := range []string{kubeletPluginDir, filepath.Dir(kubeletPluginDir)} {
		_, err := os.Stat(path)
		switch {
		case err == nil:
			lines = append(lines, path+" exists")
		case errors.Is(err, fs.ErrNotExist):
			lines = append(lines, path+" is missing")
		default:
			t.Fatalf("failed to stat %s: %v", path, err)
		}
	}
	entries, err := os.ReadDir(kubeletPluginDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("failed to list %s: %v", kubeletPluginDir, err)
	}
	for _, entry := range entries {
		info, err := entry.Info()
		if err != nil {
			t.Fatalf("failed to stat %s: %v", entry.Name(), err)
		}
		lines = append(lines, fmt.Sprintf("entry %s, mode %v, %d bytes", entry.Name(),
			info.Mode(), info.Size()))
	}
	return strings.Join(lines, "\n")
}

func TestDemoWalkthrough(t *testing.T) {
	binary := tunManagerBinary(t)
	if os.Geteuid() != 0 {
		t.Fatalf("the demo must run as root: it serves %s and creates a network namespace",
			kubeletPluginDir)
	}
	rejectLiveSockets(t)
	before := pluginDirState(t)

	ctx, cancel := context.WithTimeout(context.Background(), demoTimeout)
	defer cancel()
	var out bytes.Buffer
	log := &lockedBuffer{}
	err := demo.Run(ctx, demo.Config{Binary: binary, Out: &out, Log: log, ManagerLogVerbosity: 2})
	steps := out.String()
	if err != nil {
		t.Fatalf("demo failed: %v\nsteps:\n%s\nlog:\n%s", err, steps, log.String())
	}
	t.Logf("steps:\n%s", steps)

	expected := []string{
		// Test binaries carry no module versions, so TestDemoCommand checks the version.
		"Using the kubelet's device manager from Kubernetes ",
		"registration of devices.anza-labs.dev/tun: capacity 1000, allocatable 1000",
		"requests devices.anza-labs.dev/tun: 1",
		"The manager assigned slot tun",
		"device: host path /dev/net/tun, container path /dev/net/tun, permissions rwm",
		"$ ip -details link show dev " + demo.InterfaceName,
		"tun type tun pi off",
		"Closing the file removed " + demo.InterfaceName,
		"tun-manager exited with code 0; " + filepath.Join(kubeletPluginDir, tunSocketName) +
			" was removed",
		"capacity 1000, allocatable 0",
		"Stopped the device manager",
	}
	for _, line := range expected {
		if !strings.Contains(steps, line) {
			t.Errorf("demo output lacks %q", line)
		}
	}
	if !strings.Contains(log.String(), "registered devices.anza-labs.dev/tun") {
		t.Errorf("tun-manager log lacks its registration:\n%s", log.String())
	}

	if after := pluginDirState(t); after != before {
		t.Errorf("demo left %s changed; before:\n%s\nafter:\n%s", kubeletPluginDir, before, after)
	}
}
