// Package kubeletdir prepares the kubelet's device-plugin directory for a device manager that
// runs outside a kubelet, and restores the directory afterwards.
package kubeletdir

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

const (
	// PluginDir is the kubelet's device-plugin directory. The device manager of kubelet
	// v1.37.2 serves its Registration socket there at the fixed path
	// k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1.KubeletSocket and keeps its checkpoint
	// beside it, so a device manager started outside a kubelet must use this directory.
	PluginDir = "/var/lib/kubelet/device-plugins"
	// KubeletSocketName is the file name of the kubelet's Registration socket in PluginDir.
	KubeletSocketName = "kubelet.sock"
	// CheckpointName is the device manager's checkpoint file in PluginDir.
	CheckpointName = "kubelet_internal_checkpoint"
	// dialTimeout bounds the connection attempt that distinguishes a live socket from a stale one.
	dialTimeout = time.Second
)

// InUseError is the error of CheckNoLiveSockets: a server accepts connections on Socket.
type InUseError struct {
	// Socket is the path of the live socket.
	Socket string
	// Kubelet is true when Socket is the kubelet's Registration socket.
	Kubelet bool
}

func (e *InUseError) Error() string {
	if e.Kubelet {
		return fmt.Sprintf("a kubelet is serving %s on this machine", e.Socket)
	}
	return fmt.Sprintf("a server listens on %s, and the device manager removes every socket "+
		"in %s when it starts", e.Socket, filepath.Dir(e.Socket))
}

// CheckNoLiveSockets returns an *InUseError when a server accepts connections on any socket in
// dir, such as a running kubelet on kubelet.sock or a device plugin. A missing dir has none.
func CheckNoLiveSockets(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to list %s: %w", dir, err)
	}
	for _, entry := range entries {
		if entry.Type()&fs.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(dir, entry.Name())
		connection, err := net.DialTimeout("unix", path, dialTimeout)
		if err != nil {
			continue
		}
		_ = connection.Close()
		return &InUseError{Socket: path, Kubelet: entry.Name() == KubeletSocketName}
	}
	return nil
}

// Claim records the state of a device-plugin directory so that Restore can put it back.
type Claim struct {
	dir string
	// before is the set of entry names in dir when it was claimed.
	before map[string]bool
	// checkpoint and checkpointInfo are the content and file info of the checkpoint when it
	// existed at claim time, or nil.
	checkpoint     []byte
	checkpointInfo fs.FileInfo
	// StaleSockets are the sockets found in dir at claim time. The device manager removes
	// them at start, as the kubelet does, and Restore does not bring them back.
	StaleSockets []string
	// CreatedDirs are the directories NewClaim created, parents first. Restore removes them.
	CreatedDirs []string
}

// NewClaim creates dir and its missing parents with mode 0750, as the kubelet does, and records
// its entries and its checkpoint. On error it removes the directories it created. It does not
// check for live sockets: call CheckNoLiveSockets first.
func NewClaim(dir string) (*Claim, error) {
	claim := &Claim{dir: dir, before: map[string]bool{}}
	if err := claim.createMissingDirs(); err != nil {
		return nil, claim.undo(err)
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, claim.undo(fmt.Errorf("failed to list %s: %w", dir, err))
	}
	for _, entry := range entries {
		claim.before[entry.Name()] = true
		if entry.Type()&fs.ModeSocket != 0 {
			claim.StaleSockets = append(claim.StaleSockets, filepath.Join(dir, entry.Name()))
		}
	}

	checkpointPath := filepath.Join(dir, CheckpointName)
	claim.checkpoint, claim.checkpointInfo, err = readIfPresent(checkpointPath)
	if err != nil {
		return nil, claim.undo(fmt.Errorf("failed to back up %s: %w", checkpointPath, err))
	}
	return claim, nil
}

// HadCheckpoint reports whether the directory contained the device manager's checkpoint when
// it was claimed.
func (c *Claim) HadCheckpoint() bool {
	return c.checkpointInfo != nil
}

// Restore removes every entry of the directory that appeared after NewClaim, restores a
// checkpoint that existed before byte for byte, then removes the directories NewClaim created.
// It returns the paths it removed, and keeps going after an error so that it removes as much
// as it can.
func (c *Claim) Restore() ([]string, error) {
	var removed []string
	var errs []error
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		errs = append(errs, fmt.Errorf("failed to list %s for cleanup: %w", c.dir, err))
	}
	for _, entry := range entries {
		if c.before[entry.Name()] {
			continue
		}
		path := filepath.Join(c.dir, entry.Name())
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, fmt.Errorf("failed to remove %s: %w", path, err))
			continue
		}
		removed = append(removed, path)
	}

	if c.checkpointInfo != nil {
		path := filepath.Join(c.dir, CheckpointName)
		if err := restoreFile(path, c.checkpoint, c.checkpointInfo); err != nil {
			errs = append(errs, fmt.Errorf("failed to restore %s: %w", path, err))
		}
	}

	removedDirs, err := c.removeCreatedDirs()
	removed = append(removed, removedDirs...)
	errs = append(errs, err)
	return removed, errors.Join(errs...)
}

// undo removes the directories created so far after NewClaim failed with err, and returns err
// joined with any removal error.
func (c *Claim) undo(err error) error {
	_, removeErr := c.removeCreatedDirs()
	return errors.Join(err, removeErr)
}

// createMissingDirs creates c.dir and its missing parents and records each one it creates.
func (c *Claim) createMissingDirs() error {
	var missing []string
	for path := c.dir; ; path = filepath.Dir(path) {
		_, err := os.Stat(path)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to stat %s: %w", path, err)
		}
		missing = append([]string{path}, missing...)
	}
	for _, path := range missing {
		if err := os.Mkdir(path, 0o750); err != nil {
			return fmt.Errorf("failed to create %s: %w", path, err)
		}
		c.CreatedDirs = append(c.CreatedDirs, path)
	}
	return nil
}

// removeCreatedDirs removes the directories createMissingDirs created, deepest first, and
// returns the ones it removed. A directory that is not empty stays, with an error.
func (c *Claim) removeCreatedDirs() ([]string, error) {
	var removed []string
	var errs []error
	for index := len(c.CreatedDirs) - 1; index >= 0; index-- {
		path := c.CreatedDirs[index]
		if err := os.Remove(path); err != nil {
			errs = append(errs, fmt.Errorf("failed to remove directory %s: %w", path, err))
			continue
		}
		removed = append(removed, path)
	}
	c.CreatedDirs = nil
	return removed, errors.Join(errs...)
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
