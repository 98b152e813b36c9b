package conformance

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
	"k8s.io/kubernetes/pkg/kubelet/config"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
	kubeletmetrics "k8s.io/kubernetes/pkg/kubelet/metrics"
)

const (
	// tunResource is the resource name tun-manager advertises by default.
	tunResource = "devices.anza-labs.dev/tun"
	// containerName is the name of the one container in every test pod.
	containerName = "app"
	// managerLogVerbosity shows the device manager's connect, disconnect and device-update
	// messages without its per-call detail.
	managerLogVerbosity = 2
)

// podSource is the stub behind the manager's ActivePodsFunc: the pods the kubelet would list
// as active.
type podSource struct {
	mu   sync.Mutex
	pods []*v1.Pod
}

func (s *podSource) add(pod *v1.Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods = append(s.pods, pod)
}

func (s *podSource) remove(pod *v1.Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	remaining := s.pods[:0]
	for _, active := range s.pods {
		if active.UID != pod.UID {
			remaining = append(remaining, active)
		}
	}
	s.pods = remaining
}

func (s *podSource) activePods() []*v1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*v1.Pod(nil), s.pods...)
}

// deviceManager is the kubelet's device manager, started as the kubelet's container manager
// starts it, with stub pod sources.
type deviceManager struct {
	manager *devicemanager.ManagerImpl
	pods    *podSource
	logger  klog.Logger
	ctx     context.Context
}

// startDeviceManager creates the manager with its public constructor and a topology manager
// with the kubelet's default "none" policy, then starts it. Start removes every socket in
// kubeletPluginDir, reads the checkpoint and serves the Registration socket. The caller must
// have claimed kubeletPluginDir. The manager is stopped when the test ends.
func startDeviceManager(t *testing.T, pods *podSource) *deviceManager {
	t.Helper()
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(managerLogVerbosity)))
	ctx := klog.NewContext(context.Background(), logger)
	topology, err := topologymanager.NewManager(logger, nil, topologymanager.PolicyNone,
		topologymanager.ContainerTopologyScope, nil)
	if err != nil {
		t.Fatalf("failed to create the topology manager: %v", err)
	}

	manager, err := devicemanager.NewManagerImpl(logger, nil, topology)
	if err != nil {
		t.Fatalf("failed to create the device manager: %v", err)
	}
	topology.AddHintProvider(logger, manager)

	sourcesReady := config.NewSourcesReady(func(sets.Set[string]) bool { return true })
	err = manager.Start(logger, pods.activePods, sourcesReady, containermap.NewContainerMap(),
		sets.New[string]())
	if err != nil {
		t.Fatalf("failed to start the device manager: %v", err)
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
	capacityList, allocatableList, _ := d.manager.GetCapacity(d.logger)
	capacityQuantity := capacityList[v1.ResourceName(resourceName)]
	allocatableQuantity := allocatableList[v1.ResourceName(resourceName)]
	return capacityQuantity.Value(), allocatableQuantity.Value()
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
			plugin.state())
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
	d.pods.add(pod)
	err := d.manager.Allocate(d.ctx, pod, &pod.Spec.Containers[0], lifecycle.AddOperation)
	if err != nil {
		d.pods.remove(pod)
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
// resource, with requests equal to limits as extended resources require.
func newPodRequesting(name string, requests map[string]int64) *v1.Pod {
	resources := v1.ResourceList{}
	for resourceName, count := range requests {
		resources[v1.ResourceName(resourceName)] = *resource.NewQuantity(count, resource.DecimalSI)
	}
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: "default",
			UID:       types.UID(fmt.Sprintf("%s-%d", name, time.Now().UnixNano())),
		},
		Spec: v1.PodSpec{
			Containers: []v1.Container{{
				Name:      containerName,
				Resources: v1.ResourceRequirements{Requests: resources, Limits: resources},
			}},
		},
	}
}
