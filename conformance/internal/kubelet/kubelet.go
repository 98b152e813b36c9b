// Package kubelet runs the kubelet's own device manager from
// k8s.io/kubernetes/pkg/kubelet/cm/devicemanager outside a kubelet. It starts the manager as
// the kubelet's container manager does, with a stub list of active pods.
package kubelet

import (
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
	"k8s.io/kubernetes/pkg/kubelet/config"
)

const (
	// TunResource is the resource name tun-manager advertises by default.
	TunResource = "devices.anza-labs.dev/tun"
	// ContainerName is the name of the one container in every pod that NewPod returns.
	ContainerName = "app"
)

// PodSource is the stub behind the manager's ActivePodsFunc: the pods the kubelet would list
// as active.
type PodSource struct {
	mu   sync.Mutex
	pods []*v1.Pod
}

// Add makes pod active.
func (s *PodSource) Add(pod *v1.Pod) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods = append(s.pods, pod)
}

// Remove makes the pod with pod's UID inactive.
func (s *PodSource) Remove(pod *v1.Pod) {
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

// ActivePods returns a copy of the active pods. It is the manager's ActivePodsFunc.
func (s *PodSource) ActivePods() []*v1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*v1.Pod(nil), s.pods...)
}

// StartDeviceManager creates the manager with its public constructor and a topology manager
// with the kubelet's default "none" policy, then starts it. Start removes every socket in the
// kubelet's device-plugin directory, reads the checkpoint there and serves the Registration
// socket. The caller must stop the manager.
func StartDeviceManager(logger klog.Logger, pods *PodSource) (*devicemanager.ManagerImpl, error) {
	topology, err := topologymanager.NewManager(logger, nil, topologymanager.PolicyNone,
		topologymanager.ContainerTopologyScope, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to create the topology manager: %w", err)
	}

	manager, err := devicemanager.NewManagerImpl(logger, nil, topology)
	if err != nil {
		return nil, fmt.Errorf("failed to create the device manager: %w", err)
	}
	topology.AddHintProvider(logger, manager)

	sourcesReady := config.NewSourcesReady(func(sets.Set[string]) bool { return true })
	err = manager.Start(logger, pods.ActivePods, sourcesReady, containermap.NewContainerMap(),
		sets.New[string]())
	if err != nil {
		return nil, fmt.Errorf("failed to start the device manager: %w", err)
	}
	return manager, nil
}

// ResourceCounts returns the capacity and allocatable of resourceName, as the kubelet would
// report them in the node status.
func ResourceCounts(manager *devicemanager.ManagerImpl, logger klog.Logger, resourceName string) (capacity, allocatable int64) {
	capacityList, allocatableList, _ := manager.GetCapacity(logger)
	capacityQuantity := capacityList[v1.ResourceName(resourceName)]
	allocatableQuantity := allocatableList[v1.ResourceName(resourceName)]
	return capacityQuantity.Value(), allocatableQuantity.Value()
}

// NewPod returns a pod in namespace "default" with a unique UID, whose one container
// ContainerName requests the given number of each resource, with requests equal to limits as
// extended resources require.
func NewPod(name string, requests map[string]int64) *v1.Pod {
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
				Name:      ContainerName,
				Resources: v1.ResourceRequirements{Requests: resources, Limits: resources},
			}},
		},
	}
}
