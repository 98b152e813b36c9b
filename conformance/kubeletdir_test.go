package conformance

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/anza-labs/tun-manager/conformance/internal/kubeletdir"
)

const (
	// kubeletPluginDir is the kubelet's device-plugin directory, which the tests that run the
	// device manager must use.
	kubeletPluginDir = kubeletdir.PluginDir
	// checkpointName is the device manager's checkpoint file in kubeletPluginDir.
	checkpointName = kubeletdir.CheckpointName
)

// claimKubeletPluginDir prepares kubeletPluginDir for a device manager owned by the test, and
// restores it when the test ends. It fails the test when not run as root or when a server
// listens on a socket there, because the manager's start removes every socket in the
// directory. Directories it creates, and entries that appear during the test, are removed
// afterwards. A checkpoint that existed before is restored byte for byte.
func claimKubeletPluginDir(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("these tests must run as root: they serve the kubelet's Registration socket "+
			"%s and make device nodes with mknod", filepath.Join(kubeletPluginDir,
			kubeletdir.KubeletSocketName))
	}
	rejectLiveSockets(t)

	claim, err := kubeletdir.NewClaim(kubeletPluginDir)
	if err != nil {
		t.Fatalf("failed to prepare %s: %v", kubeletPluginDir, err)
	}
	for _, socket := range claim.StaleSockets {
		t.Logf("stale socket %s: the device manager removes it at start, as the kubelet does",
			socket)
	}
	t.Cleanup(func() {
		if _, err := claim.Restore(); err != nil {
			t.Errorf("failed to restore %s: %v", kubeletPluginDir, err)
		}
	})
}

// rejectLiveSockets fails the test when a server accepts connections on any socket in
// kubeletPluginDir, such as a running kubelet on kubelet.sock or a device plugin.
func rejectLiveSockets(t *testing.T) {
	t.Helper()
	err := kubeletdir.CheckNoLiveSockets(kubeletPluginDir)
	var inUse *kubeletdir.InUseError
	switch {
	case err == nil:
	case errors.As(err, &inUse) && inUse.Kubelet:
		t.Fatalf("%v; these tests run their own device manager on that fixed path, so run "+
			"them on a machine without a kubelet", err)
	case errors.As(err, &inUse):
		t.Fatalf("%v; stop that server before running these tests", err)
	default:
		t.Fatalf("%v", err)
	}
}

// removeSockets removes every socket in dir, as the kubelet does at start, and returns the
// names it removed.
func removeSockets(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("failed to list %s: %v", dir, err)
	}
	var removed []string
	for _, entry := range entries {
		if entry.Type()&fs.ModeSocket == 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, entry.Name())); err != nil {
			t.Fatalf("failed to remove socket %s: %v", filepath.Join(dir, entry.Name()), err)
		}
		removed = append(removed, entry.Name())
	}
	return removed
}
