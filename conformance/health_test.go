package conformance

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
)

// makeCharDevice creates a character device node at path with the given numbers.
func makeCharDevice(t *testing.T, path string, major, minor uint32) {
	t.Helper()
	if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(major, minor))); err != nil {
		t.Fatalf("mknod %s c %d %d failed: %v", path, major, minor, err)
	}
}

func TestDeviceNodeHealth(t *testing.T) {
	claimKubeletPluginDir(t)
	kubelet := startDeviceManager(t, &podSource{})
	node := filepath.Join(t.TempDir(), "tun")
	makeCharDevice(t, node, 10, 200)
	// The sysfs root stays /sys, which has class/misc/tun/dev when the tun driver is loaded.
	plugin := startTunManager(t, "--devices", "3", "--device-path", node, "--sysfs-root", "/sys")
	kubelet.waitForCounts(t, plugin, 3, 3)

	// Unhealthy slots stay in capacity but leave allocatable.
	if err := os.Remove(node); err != nil {
		t.Fatalf("failed to remove %s: %v", node, err)
	}
	kubelet.waitForCounts(t, plugin, 3, 0)
	if err := kubelet.admit(newPod("while-missing", 1)); err == nil {
		t.Errorf("manager admitted a pod while every slot is unhealthy")
	}

	makeCharDevice(t, node, 10, 200)
	kubelet.waitForCounts(t, plugin, 3, 3)

	// A character device with other numbers, here /dev/null's 1:3, is not the tun device.
	if err := os.Remove(node); err != nil {
		t.Fatalf("failed to remove %s: %v", node, err)
	}
	makeCharDevice(t, node, 1, 3)
	kubelet.waitForCounts(t, plugin, 3, 0)

	if err := os.Remove(node); err != nil {
		t.Fatalf("failed to remove %s: %v", node, err)
	}
	makeCharDevice(t, node, 10, 200)
	kubelet.waitForCounts(t, plugin, 3, 3)
	pod := newPod("after-recovery", 1)
	if err := kubelet.admit(pod); err != nil {
		t.Fatalf("manager rejected a pod after the device recovered: %v", err)
	}
	options, err := kubelet.manager.GetDeviceRunContainerOptions(kubelet.ctx, pod,
		&pod.Spec.Containers[0])
	if err != nil {
		t.Fatalf("GetDeviceRunContainerOptions failed: %v", err)
	}
	expected := kubecontainer.DeviceInfo{
		PathOnHost:      node,
		PathInContainer: "/dev/net/tun",
		Permissions:     "rwm",
	}
	if options == nil || !slices.Equal(options.Devices, []kubecontainer.DeviceInfo{expected}) {
		t.Errorf("run-container options are %+v, expected device %+v", options, expected)
	}
}
