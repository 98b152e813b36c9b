package conformance

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

const (
	// kubeletPluginDir is the kubelet's device-plugin directory. The device manager serves its
	// Registration socket there at the fixed path pluginapi.KubeletSocket and keeps its
	// checkpoint beside it, so the tests that run the manager must use this directory.
	kubeletPluginDir = "/var/lib/kubelet/device-plugins"
	// checkpointName is the device manager's checkpoint file in kubeletPluginDir.
	checkpointName = "kubelet_internal_checkpoint"
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
			"%s and make device nodes with mknod", pluginapi.KubeletSocket)
	}
	rejectLiveSockets(t)
	createMissingDirs(t, kubeletPluginDir)

	before := map[string]bool{}
	entries, err := os.ReadDir(kubeletPluginDir)
	if err != nil {
		t.Fatalf("failed to list %s: %v", kubeletPluginDir, err)
	}
	for _, entry := range entries {
		before[entry.Name()] = true
		if entry.Type()&fs.ModeSocket != 0 {
			t.Logf("stale socket %s: the device manager removes it at start, as the kubelet does",
				filepath.Join(kubeletPluginDir, entry.Name()))
		}
	}
	checkpointPath := filepath.Join(kubeletPluginDir, checkpointName)
	savedCheckpoint, checkpointInfo, err := readIfPresent(checkpointPath)
	if err != nil {
		t.Fatalf("failed to back up %s: %v", checkpointPath, err)
	}

	t.Cleanup(func() {
		entries, err := os.ReadDir(kubeletPluginDir)
		if err != nil {
			t.Errorf("failed to list %s for cleanup: %v", kubeletPluginDir, err)
			return
		}
		for _, entry := range entries {
			if before[entry.Name()] {
				continue
			}
			path := filepath.Join(kubeletPluginDir, entry.Name())
			if err := os.RemoveAll(path); err != nil {
				t.Errorf("failed to remove %s that the test created: %v", path, err)
			}
		}
		if checkpointInfo != nil {
			if err := restoreFile(checkpointPath, savedCheckpoint, checkpointInfo); err != nil {
				t.Errorf("failed to restore %s: %v", checkpointPath, err)
			}
		}
	})
}

// rejectLiveSockets fails the test when a server accepts connections on any socket in
// kubeletPluginDir, such as a running kubelet on kubelet.sock or a device plugin.
func rejectLiveSockets(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir(kubeletPluginDir)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatalf("failed to list %s: %v", kubeletPluginDir, err)
	}
	for _, entry := range entries {
		if entry.Type()&fs.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(kubeletPluginDir, entry.Name())
		connection, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			continue
		}
		_ = connection.Close()
		if path == pluginapi.KubeletSocket {
			t.Fatalf("a kubelet is serving %s on this machine; these tests run their own "+
				"device manager on that fixed path, so run them on a machine without a kubelet",
				path)
		}
		t.Fatalf("a server listens on %s; the device manager removes every socket in %s when "+
			"it starts, so stop that server before running these tests", path, kubeletPluginDir)
	}
}

// createMissingDirs creates dir and its missing parents with mode 0750, as the kubelet does.
// Each directory it creates is removed when the test ends, after the cleanups registered later.
func createMissingDirs(t *testing.T, dir string) {
	t.Helper()
	var missing []string
	for path := dir; ; path = filepath.Dir(path) {
		_, err := os.Stat(path)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("failed to stat %s: %v", path, err)
		}
		missing = append([]string{path}, missing...)
	}
	for _, path := range missing {
		if err := os.Mkdir(path, 0o750); err != nil {
			t.Fatalf("failed to create %s: %v", path, err)
		}
		t.Cleanup(func() {
			if err := os.Remove(path); err != nil {
				t.Errorf("failed to remove directory %s that the test created: %v", path, err)
			}
		})
	}
}

// readIfPresent returns the content and file info of path, or nil for both when it is absent.
func readIfPresent(path string) ([]byte, fs.FileInfo, error) {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return content, info, nil
}

// restoreFile writes content to path and sets the mode from info. The manager replaces its
// checkpoint by rename, so the file at path may be new and have another mode.
func restoreFile(path string, content []byte, info fs.FileInfo) error {
	if err := os.WriteFile(path, content, info.Mode().Perm()); err != nil {
		return err
	}
	return os.Chmod(path, info.Mode().Perm())
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
