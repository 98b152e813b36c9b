package kubeletdir

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatalf("failed to write %s: %v", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatalf("failed to chmod %s: %v", path, err)
	}
}

func TestClaimCreatesAndRemovesDirs(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "var", "lib", "plugins")

	claim, err := NewClaim(dir)
	if err != nil {
		t.Fatalf("NewClaim failed: %v", err)
	}
	expectedDirs := []string{filepath.Join(root, "var"), filepath.Join(root, "var", "lib"), dir}
	if !slices.Equal(claim.CreatedDirs, expectedDirs) {
		t.Errorf("CreatedDirs is %v, expected %v", claim.CreatedDirs, expectedDirs)
	}
	if claim.HadCheckpoint() {
		t.Errorf("HadCheckpoint is true for a new directory")
	}
	writeFile(t, filepath.Join(dir, CheckpointName), "new", 0o600)

	removed, err := claim.Restore()
	if err != nil {
		t.Fatalf("Restore failed: %v", err)
	}
	expectedRemoved := []string{filepath.Join(dir, CheckpointName), dir,
		filepath.Join(root, "var", "lib"), filepath.Join(root, "var")}
	if !slices.Equal(removed, expectedRemoved) {
		t.Errorf("Restore removed %v, expected %v", removed, expectedRemoved)
	}
	if _, err := os.Stat(filepath.Join(root, "var")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Restore (stat error %v)", filepath.Join(root, "var"), err)
	}
}

func TestClaimRestoresExistingDir(t *testing.T) {
	dir := t.TempDir()
	checkpoint := filepath.Join(dir, CheckpointName)
	preexisting := filepath.Join(dir, "preexisting")
	writeFile(t, checkpoint, "before", 0o640)
	writeFile(t, preexisting, "preexisting", 0o600)

	claim, err := NewClaim(dir)
	if err != nil {
		t.Fatalf("NewClaim failed: %v", err)
	}
	if len(claim.CreatedDirs) != 0 {
		t.Errorf("CreatedDirs is %v for an existing directory", claim.CreatedDirs)
	}
	if !claim.HadCheckpoint() {
		t.Errorf("HadCheckpoint is false although %s exists", checkpoint)
	}
	// The manager replaces its checkpoint by rename, so the mode may change too.
	if err := os.Remove(checkpoint); err != nil {
		t.Fatalf("failed to remove %s: %v", checkpoint, err)
	}
	writeFile(t, checkpoint, "after", 0o600)
	writeFile(t, filepath.Join(dir, "added"), "added", 0o600)

	removed, err := claim.Restore()
	if err != nil {
		t.Fatalf("Restore failed: %v", err)
	}
	if !slices.Equal(removed, []string{filepath.Join(dir, "added")}) {
		t.Errorf("Restore removed %v, expected only the added file", removed)
	}
	content, err := os.ReadFile(checkpoint)
	if err != nil {
		t.Fatalf("failed to read %s: %v", checkpoint, err)
	}
	if string(content) != "before" {
		t.Errorf("checkpoint contains %q, expected %q", content, "before")
	}
	info, err := os.Stat(checkpoint)
	if err != nil {
		t.Fatalf("failed to stat %s: %v", checkpoint, err)
	}
	if info.Mode().Perm() != 0o640 {
		t.Errorf("checkpoint mode is %v, expected 0640", info.Mode().Perm())
	}
	if _, err := os.Stat(preexisting); err != nil {
		t.Errorf("%s was there before the claim but is gone: %v", preexisting, err)
	}
}

func TestCheckNoLiveSockets(t *testing.T) {
	dir := t.TempDir()
	if err := CheckNoLiveSockets(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("CheckNoLiveSockets of a missing directory returned %v", err)
	}

	// A stale socket: the file stays after its listener closes.
	staleAddress := &net.UnixAddr{Name: filepath.Join(dir, "stale.sock"), Net: "unix"}
	stale, err := net.ListenUnix("unix", staleAddress)
	if err != nil {
		t.Fatalf("failed to listen: %v", err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close()
	if err := CheckNoLiveSockets(dir); err != nil {
		t.Errorf("CheckNoLiveSockets with only a stale socket returned %v", err)
	}

	plugin, err := net.Listen("unix", filepath.Join(dir, "plugin.sock"))
	if err != nil {
		t.Fatalf("failed to listen: %v", err)
	}
	var inUse *InUseError
	err = CheckNoLiveSockets(dir)
	if !errors.As(err, &inUse) {
		t.Fatalf("CheckNoLiveSockets returned %v, expected an InUseError for plugin.sock", err)
	}
	if inUse.Kubelet {
		t.Errorf("InUseError for plugin.sock has Kubelet true")
	}
	if inUse.Socket != filepath.Join(dir, "plugin.sock") {
		t.Errorf("InUseError names %s, expected %s", inUse.Socket, filepath.Join(dir, "plugin.sock"))
	}
	_ = plugin.Close()

	kubelet, err := net.Listen("unix", filepath.Join(dir, KubeletSocketName))
	if err != nil {
		t.Fatalf("failed to listen: %v", err)
	}
	defer func() { _ = kubelet.Close() }()
	err = CheckNoLiveSockets(dir)
	if !errors.As(err, &inUse) {
		t.Fatalf("CheckNoLiveSockets returned %v, expected an InUseError for the kubelet", err)
	}
	if !inUse.Kubelet {
		t.Errorf("InUseError for %s has Kubelet false", inUse.Socket)
	}
}
