package conformance

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/kubelet/checkpointmanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager/checkpoint"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
)

// tunDeviceInfo is the device every admitted container must get: the host's tun node, at the
// same path in the container, with read, write and mknod cgroup permissions.
var tunDeviceInfo = kubecontainer.DeviceInfo{
	PathOnHost:      "/dev/net/tun",
	PathInContainer: "/dev/net/tun",
	Permissions:     "rwm",
}

func TestAllocateOneSlot(t *testing.T) {
	claimKubeletPluginDir(t)
	kubelet := startDeviceManager(t, &podSource{})
	plugin := startTunManager(t, "--devices", "2")
	kubelet.waitForCounts(t, plugin, 2, 2)

	pod := newPod("one-slot", 1)
	if err := kubelet.admit(pod); err != nil {
		t.Fatalf("manager rejected a pod requesting 1 of 2 slots: %v", err)
	}
	ids := kubelet.allocatedIDs(pod)
	if len(ids) != 1 || !strings.HasPrefix(ids[0], "tun") {
		t.Errorf("pod was assigned devices %v, expected one tun slot", ids)
	}

	options, err := kubelet.manager.GetDeviceRunContainerOptions(kubelet.ctx, pod,
		&pod.Spec.Containers[0])
	if err != nil {
		t.Fatalf("GetDeviceRunContainerOptions failed: %v", err)
	}
	if options == nil {
		t.Fatalf("GetDeviceRunContainerOptions returned no options for an admitted pod")
	}
	if !slices.Equal(options.Devices, []kubecontainer.DeviceInfo{tunDeviceInfo}) {
		t.Errorf("run-container devices are %+v, expected [%+v]", options.Devices, tunDeviceInfo)
	}
}

func TestAllocateMoreSlotsThanExist(t *testing.T) {
	claimKubeletPluginDir(t)
	kubelet := startDeviceManager(t, &podSource{})
	plugin := startTunManager(t, "--devices", "2")
	kubelet.waitForCounts(t, plugin, 2, 2)

	tooLarge := newPod("three-slots", 3)
	err := kubelet.admit(tooLarge)
	if err == nil {
		t.Fatalf("manager admitted a pod requesting 3 of 2 slots")
	}
	if !strings.Contains(err.Error(), tunResource) {
		t.Errorf("rejection %q does not name the resource %s", err, tunResource)
	}
	if ids := kubelet.allocatedIDs(tooLarge); len(ids) != 0 {
		t.Errorf("rejected pod is assigned devices %v", ids)
	}

	// Two pods of one slot each use up the pool, and a third is rejected.
	first, second := newPod("first", 1), newPod("second", 1)
	for _, pod := range []*v1.Pod{first, second} {
		if err := kubelet.admit(pod); err != nil {
			t.Fatalf("manager rejected %s requesting 1 slot: %v", pod.Name, err)
		}
	}
	firstIDs, secondIDs := kubelet.allocatedIDs(first), kubelet.allocatedIDs(second)
	if len(firstIDs) != 1 || len(secondIDs) != 1 || firstIDs[0] == secondIDs[0] {
		t.Errorf("pods were assigned %v and %v, expected two different slots", firstIDs,
			secondIDs)
	}
	if err := kubelet.admit(newPod("third", 1)); err == nil {
		t.Errorf("manager admitted a third pod although both slots are allocated")
	}
}

func TestCheckpointKeepsAllocation(t *testing.T) {
	claimKubeletPluginDir(t)
	pods := &podSource{}
	kubelet := startDeviceManager(t, pods)
	plugin := startTunManager(t, "--devices", "2")
	kubelet.waitForCounts(t, plugin, 2, 2)

	admitted := newPod("checkpointed", 1)
	if err := kubelet.admit(admitted); err != nil {
		t.Fatalf("manager rejected a pod requesting 1 of 2 slots: %v", err)
	}
	allocated := kubelet.allocatedIDs(admitted)
	if len(allocated) != 1 {
		t.Fatalf("pod was assigned devices %v, expected one slot", allocated)
	}
	checkpointed := readCheckpointedIDs(t, string(admitted.UID))
	if !slices.Equal(checkpointed, allocated) {
		t.Fatalf("checkpoint records %v for the pod, expected %v", checkpointed, allocated)
	}

	// A kubelet restart: the new manager reads the checkpoint, and the pod is still active.
	kubelet.stop(t)
	kubelet = startDeviceManager(t, pods)
	kubelet.waitForCounts(t, plugin, 2, 2)

	if restored := kubelet.allocatedIDs(admitted); !slices.Equal(restored, allocated) {
		t.Fatalf("new manager assigns %v to the checkpointed pod, expected %v", restored,
			allocated)
	}
	options, err := kubelet.manager.GetDeviceRunContainerOptions(kubelet.ctx, admitted,
		&admitted.Spec.Containers[0])
	if err != nil {
		t.Fatalf("GetDeviceRunContainerOptions failed after the restart: %v", err)
	}
	if options == nil || !slices.Equal(options.Devices, []kubecontainer.DeviceInfo{tunDeviceInfo}) {
		t.Errorf("run-container options after the restart are %+v, expected device %+v",
			options, tunDeviceInfo)
	}

	if err := kubelet.admit(newPod("both-slots", 2)); err == nil {
		t.Errorf("new manager admitted a pod requesting 2 slots although 1 is checkpointed " +
			"as allocated")
	}
	other := newPod("other", 1)
	if err := kubelet.admit(other); err != nil {
		t.Fatalf("new manager rejected a pod requesting the 1 free slot: %v", err)
	}
	if ids := kubelet.allocatedIDs(other); len(ids) != 1 || ids[0] == allocated[0] {
		t.Errorf("second pod was assigned %v, expected the slot other than %s", ids,
			allocated[0])
	}
}

// readCheckpointedIDs returns the sorted tunResource device IDs that the kubelet's checkpoint
// file records for the pod's container.
func readCheckpointedIDs(t *testing.T, podUID string) []string {
	t.Helper()
	manager, err := checkpointmanager.NewCheckpointManager(kubeletPluginDir)
	if err != nil {
		t.Fatalf("failed to open the checkpoint directory %s: %v", kubeletPluginDir, err)
	}
	data := checkpoint.New(nil, nil)
	if err := manager.GetCheckpoint(checkpointName, data); err != nil {
		t.Fatalf("failed to read checkpoint %s: %v",
			filepath.Join(kubeletPluginDir, checkpointName), err)
	}
	entries, _ := data.GetData()
	var ids []string
	for _, entry := range entries {
		if entry.PodUID != podUID || entry.ContainerName != containerName ||
			entry.ResourceName != tunResource {
			continue
		}
		ids = append(ids, entry.DeviceIDs.Devices().UnsortedList()...)
	}
	slices.Sort(ids)
	return ids
}
