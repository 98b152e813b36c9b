package conformance

import (
	"context"
	"fmt"
	"sort"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
	kubeletmetrics "k8s.io/kubernetes/pkg/kubelet/metrics"

	"github.com/anza-labs/tun-manager/conformance/internal/kubelet"
)

const (
	// tunResource is the resource name tun-manager advertises by default.
	tunResource = kubelet.TunResource
	// containerName is the name of the one container in every test pod.
	containerName = kubelet.ContainerName
	// managerLogVerbosity shows the device manager's connect, disconnect and device-update
	// messages without its per-call detail.
	managerLogVerbosity = 2
)

// podSource is the stub behind the manager's ActivePodsFunc: the pods the kubelet would list
// as active.
type podSource = kubelet.PodSource

// deviceManager is the kubelet's device manager, started as the kubelet's container manager
// starts it, with stub pod sources.
type deviceManager struct {
	manager *devicemanager.ManagerImpl
	pods    *podSource
	logger  klog.Logger
	ctx     context.Context
}

// startDeviceManager starts the kubelet's device manager with kubelet.StartDeviceManager and
// logs through the test. The caller must have claimed kubeletPluginDir. The manager is stopped
// when the test ends.
func startDeviceManager(t *testing.T, pods *podSource) *deviceManager {
	t.Helper()
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(managerLogVerbosity)))
	ctx := klog.NewContext(context.Background(), logger)
	manager, err := kubelet.StartDeviceManager(logger, pods)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := manager.Stop(logger); err != nil {
			t.Errorf("failed to stop the device manager: %v", err)
		}
	})
	return &deviceManager{manager: manager, pods: pods, logger: logger, ctx: ctx}
}

// stop stops the manager as a kubelet shutdown does: its Registration socket goes away and
// every plugin connection is closed.
func (d *deviceManager) stop(t *testing.T) {
	t.Helper()
	if err := d.manager.Stop(d.logger); err != nil {
		t.Fatalf("failed to stop the device manager: %v", err)
	}
}

// counts returns the capacity and allocatable of tunResource, as the kubelet would report
// them in the node status.
func (d *deviceManager) counts() (capacity, allocatable int64) {
	return d.resourceCounts(tunResource)
}

// resourceCounts returns the capacity and allocatable of resourceName.
func (d *deviceManager) resourceCounts(resourceName string) (capacity, allocatable int64) {
	return kubelet.ResourceCounts(d.manager, d.logger, resourceName)
}

// waitForCounts waits until capacity and allocatable of tunResource equal the expected values.
func (d *deviceManager) waitForCounts(t *testing.T, plugin *tunManager, capacity, allocatable int64) {
	t.Helper()
	d.waitForResourceCounts(t, plugin, tunResource, capacity, allocatable)
}

// waitForResourceCounts waits until capacity and allocatable of resourceName equal the
// expected values.
func (d *deviceManager) waitForResourceCounts(t *testing.T, plugin *tunManager, resourceName string, capacity, allocatable int64) {
	t.Helper()
	condition := fmt.Sprintf("%s capacity %d and allocatable %d", resourceName, capacity,
		allocatable)
	waitFor(t, registerTimeout, condition, func() (bool, string) {
		gotCapacity, gotAllocatable := d.resourceCounts(resourceName)
		state := fmt.Sprintf("capacity %d, allocatable %d; %s", gotCapacity, gotAllocatable,
			plugin.State())
		return gotCapacity == capacity && gotAllocatable == allocatable, state
	})
}

// registrationCount returns how many Register requests for resourceName the device managers
// of this test binary have received, from the kubelet's own registration counter.
func registrationCount(t *testing.T, resourceName string) float64 {
	t.Helper()
	// The counter records only after the kubelet's metrics are registered, once per binary.
	kubeletmetrics.Register()
	count, err := testutil.GetCounterMetricValue(
		kubeletmetrics.DevicePluginRegistrationCount.WithLabelValues(resourceName))
	if err != nil {
		t.Fatalf("failed to read the kubelet's device plugin registration counter: %v", err)
	}
	return count
}

// admit runs the manager's Allocate for the pod's container, as the kubelet's admission does,
// and keeps the pod active when it is admitted.
func (d *deviceManager) admit(pod *v1.Pod) error {
	d.pods.Add(pod)
	err := d.manager.Allocate(d.ctx, pod, &pod.Spec.Containers[0], lifecycle.AddOperation)
	if err != nil {
		d.pods.Remove(pod)
	}
	return err
}

// allocatedIDs returns the sorted tunResource device IDs the manager assigned to the pod.
func (d *deviceManager) allocatedIDs(pod *v1.Pod) []string {
	return d.allocatedResourceIDs(pod, tunResource)
}

// allocatedResourceIDs returns the sorted resourceName device IDs the manager assigned to the
// pod.
func (d *deviceManager) allocatedResourceIDs(pod *v1.Pod, resourceName string) []string {
	var ids []string
	for id := range d.manager.GetDevices(string(pod.UID), containerName)[resourceName] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// newPod returns a pod whose one container requests slots of tunResource.
func newPod(name string, slots int64) *v1.Pod {
	return newPodRequesting(name, map[string]int64{tunResource: slots})
}

// newPodRequesting returns a pod whose one container requests the given number of each
// resource.
func newPodRequesting(name string, requests map[string]int64) *v1.Pod {
	return kubelet.NewPod(name, requests)
}
