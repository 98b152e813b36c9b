package conformance

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const (
	// defaultSlots is tun-manager's default --devices.
	defaultSlots = 1000
	// tunSocketName is the socket file of tunResource in the plugin directory.
	tunSocketName = "tun.sock"
	// kubeletRestarts is how many kubelet restarts in a row tun-manager must survive.
	kubeletRestarts = 10
)

func TestRegistrationWithDefaults(t *testing.T) {
	claimKubeletPluginDir(t)
	kubelet := startDeviceManager(t, &podSource{})
	plugin := startTunManager(t)

	kubelet.waitForCounts(t, plugin, defaultSlots, defaultSlots)

	devices := kubelet.manager.GetAllocatableDevices(kubelet.logger)[tunResource]
	if len(devices) != defaultSlots {
		t.Fatalf("manager lists %d %s devices, expected %d", len(devices), tunResource,
			defaultSlots)
	}
	for _, id := range []string{"tun0", fmt.Sprintf("tun%d", defaultSlots-1)} {
		if _, ok := devices[id]; !ok {
			t.Errorf("manager does not list device %s", id)
		}
	}
	if _, err := os.Stat(filepath.Join(kubeletPluginDir, tunSocketName)); err != nil {
		t.Errorf("plugin socket missing in %s: %v", kubeletPluginDir, err)
	}
}

func TestKubeletRestartTenTimes(t *testing.T) {
	claimKubeletPluginDir(t)
	kubelet := startDeviceManager(t, &podSource{})
	plugin := startTunManager(t, "--devices", "4")
	kubelet.waitForCounts(t, plugin, 4, 4)

	for restart := 1; restart <= kubeletRestarts; restart++ {
		kubelet.stop(t)
		// The manager's Start removes every socket too; removing them here first makes the
		// restart check independent of the order in which tun-manager notices the changes.
		removed := removeSockets(t, kubeletPluginDir)
		if !slices.Contains(removed, tunSocketName) {
			t.Fatalf("restart %d: %s was not in %s before the restart; found sockets %v",
				restart, tunSocketName, kubeletPluginDir, removed)
		}
		kubelet = startDeviceManager(t, &podSource{})
		capacity, allocatable := kubelet.counts()
		t.Logf("restart %d: new manager starts with capacity %d, allocatable %d", restart,
			capacity, allocatable)
		kubelet.waitForCounts(t, plugin, 4, 4)
		if plugin.Exited() {
			t.Fatalf("restart %d: %s", restart, plugin.State())
		}
	}
}

func TestPluginRestart(t *testing.T) {
	claimKubeletPluginDir(t)
	kubelet := startDeviceManager(t, &podSource{})
	socket := filepath.Join(kubeletPluginDir, tunSocketName)

	first := startTunManager(t, "--devices", "4")
	kubelet.waitForCounts(t, first, 4, 4)

	// A crash leaves the socket file behind, so the kubelet learns of it only from the closed
	// ListAndWatch stream. The manager keeps the capacity through its grace period.
	first.kill(t)
	kubelet.waitForCounts(t, first, 4, 0)

	second := startTunManager(t, "--devices", "4")
	kubelet.waitForCounts(t, second, 4, 4)

	// SIGTERM is an orderly stop: exit code 0 and the socket file removed.
	second.terminate(t)
	if _, err := os.Stat(socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s still exists after SIGTERM (stat error %v)", socket, err)
	}
	kubelet.waitForCounts(t, second, 4, 0)

	third := startTunManager(t, "--devices", "4")
	kubelet.waitForCounts(t, third, 4, 4)
}

func TestRegistrationTwoResourceNames(t *testing.T) {
	const aliasResource = "squat.ai/tun"
	claimKubeletPluginDir(t)
	kubelet := startDeviceManager(t, &podSource{})
	plugin := startTunManager(t, "--devices", "3", "--resource-name", tunResource,
		"--resource-name", aliasResource)

	kubelet.waitForResourceCounts(t, plugin, tunResource, 3, 3)
	kubelet.waitForResourceCounts(t, plugin, aliasResource, 3, 3)
	for _, name := range []string{tunSocketName, "squat.ai_tun.sock"} {
		if _, err := os.Stat(filepath.Join(kubeletPluginDir, name)); err != nil {
			t.Errorf("plugin socket %s missing: %v", name, err)
		}
	}

	// Each name has its own pool, so one pod may take every slot of both.
	pod := newPodRequesting("both-names", map[string]int64{tunResource: 3, aliasResource: 3})
	if err := kubelet.admit(pod); err != nil {
		t.Fatalf("manager rejected a pod requesting all 3 slots of each resource name: %v", err)
	}
	for _, resourceName := range []string{tunResource, aliasResource} {
		if ids := kubelet.allocatedResourceIDs(pod, resourceName); len(ids) != 3 {
			t.Errorf("pod was assigned %s devices %v, expected 3", resourceName, ids)
		}
	}
}
