package demo

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/kubernetes/pkg/kubelet/lifecycle"

	"github.com/anza-labs/tun-manager/conformance/internal/kubelet"
	"github.com/anza-labs/tun-manager/conformance/internal/kubeletdir"
	"github.com/anza-labs/tun-manager/conformance/internal/tunmanager"
)

// The steps of Run, in order. Each prints its step and registers the cleanup of what it starts.

func (r *run) claimPluginDir() error {
	r.step("Prepare the kubelet's device-plugin directory %s", kubeletdir.PluginDir)
	claim, err := kubeletdir.NewClaim(kubeletdir.PluginDir)
	if err != nil {
		return err
	}
	r.hadCheckpoint = claim.HadCheckpoint()
	checkpoint := filepath.Join(kubeletdir.PluginDir, kubeletdir.CheckpointName)
	r.cleanups = append(r.cleanups, func() error {
		removed, err := claim.Restore()
		if len(removed) > 0 {
			r.printf("Removed %s\n", strings.Join(removed, ", "))
		}
		if err == nil && r.hadCheckpoint {
			r.printf("Restored %s\n", checkpoint)
		}
		return err
	})

	switch {
	case len(claim.CreatedDirs) > 0:
		r.printf("Created %s; the demo removes them when it exits\n",
			strings.Join(claim.CreatedDirs, ", "))
	case r.hadCheckpoint:
		r.printf("The directory exists; when it exits, the demo removes the files it adds and "+
			"restores %s as it is now\n", checkpoint)
	default:
		r.printf("The directory exists; when it exits, the demo removes the files it adds\n")
	}
	for _, socket := range claim.StaleSockets {
		r.printf("Stale socket %s: the device manager removes it at start, as the kubelet "+
			"does\n", socket)
	}
	return nil
}

func (r *run) startDeviceManager() error {
	r.step("Start the kubelet's device manager (devicemanager.NewManagerImpl), serving the " +
		"Registration socket " + filepath.Join(kubeletdir.PluginDir, kubeletdir.KubeletSocketName))
	manager, err := kubelet.StartDeviceManager(r.logger, r.pods)
	if err != nil {
		return err
	}
	r.manager = manager
	if !r.hadCheckpoint {
		r.printf("There was no checkpoint, so the manager logs \"checkpoint is not found\" as " +
			"an error, as a kubelet does on its first start\n")
	}
	r.cleanups = append(r.cleanups, func() error {
		if err := manager.Stop(r.logger); err != nil {
			return fmt.Errorf("failed to stop the device manager: %w", err)
		}
		r.printf("Stopped the device manager\n")
		return nil
	})
	return nil
}

func (r *run) startTunManager() error {
	r.step("Start tun-manager with its defaults: %s (its log follows)", r.config.Binary)
	plugin, err := tunmanager.Start(r.config.Binary, nil, r.config.Log, r.config.Log)
	if err != nil {
		return err
	}
	r.plugin = plugin
	r.cleanups = append(r.cleanups, func() error {
		if plugin.Exited() {
			return nil
		}
		err := plugin.SignalAndWait(syscall.SIGTERM)
		r.printf("Stopped %s: %v\n", plugin.Name, plugin.ProcessState())
		return err
	})
	return nil
}

func (r *run) showRegistration() error {
	capacity, allocatable, err := r.waitForCounts("the registration of "+kubelet.TunResource,
		true, func(capacity, _ int64) bool { return capacity > 0 })
	if err != nil {
		return err
	}
	r.step("The device manager accepted the registration of %s: capacity %d, allocatable %d",
		kubelet.TunResource, capacity, allocatable)
	r.printf("A kubelet reports these numbers in the node status, which `kubectl describe " +
		"node` lists under Capacity and Allocatable\n")
	if allocatable != capacity {
		return fmt.Errorf("only %d of %d slots are allocatable, so the device is Unhealthy; "+
			"tun-manager's log above names the reason", allocatable, capacity)
	}
	return nil
}

// allocate admits a stub pod through the manager, shows its run-container options and creates
// a tun interface through the allocated host path.
func (r *run) allocate(ipPath string) error {
	pod := kubelet.NewPod(podName, map[string]int64{kubelet.TunResource: 1})
	container := &pod.Spec.Containers[0]
	r.step("Admit pod %s/%s, whose container %q requests %s: 1, through the manager's Allocate",
		pod.Namespace, pod.Name, container.Name, kubelet.TunResource)
	r.pods.Add(pod)
	if err := r.manager.Allocate(r.ctx, pod, container, lifecycle.AddOperation); err != nil {
		return fmt.Errorf("the device manager rejected pod %s: %w", pod.Name, err)
	}
	var ids []string
	for id := range r.manager.GetDevices(string(pod.UID), container.Name)[kubelet.TunResource] {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	r.printf("The manager assigned slot %s and recorded it in its checkpoint %s\n",
		strings.Join(ids, ", "), filepath.Join(kubeletdir.PluginDir, kubeletdir.CheckpointName))

	options, err := r.manager.GetDeviceRunContainerOptions(r.ctx, pod, container)
	if err != nil {
		return fmt.Errorf("GetDeviceRunContainerOptions failed: %w", err)
	}
	if options == nil || len(options.Devices) == 0 {
		return fmt.Errorf("the run-container options for pod %s have no device", pod.Name)
	}
	r.step("The run-container options the kubelet hands to the container runtime")
	for _, device := range options.Devices {
		r.printf("device: host path %s, container path %s, permissions %s\n",
			device.PathOnHost, device.PathInContainer, device.Permissions)
	}

	hostPath := options.Devices[0].PathOnHost
	r.step("In a new network namespace, open %s and create tun interface %s with TUNSETIFF",
		hostPath, InterfaceName)
	report, err := createInterfaceInNewNamespace(hostPath, InterfaceName, ipPath)
	if report.linkOutput != "" {
		r.printf("$ ip -details link show dev %s\n%s", InterfaceName, report.linkOutput)
	}
	if err != nil {
		return err
	}
	ownNamespace, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("failed to read the demo's network namespace: %w", err)
	}
	r.printf("%s had index %d in network namespace %s (the demo runs in %s)\n", InterfaceName,
		report.index, report.namespace, ownNamespace)
	if !report.goneAfterClose {
		return fmt.Errorf("%s still exists after the file was closed", InterfaceName)
	}
	r.printf("Closing the file removed %s\n", InterfaceName)
	return nil
}

func (r *run) terminateTunManager() error {
	r.step("Send SIGTERM to tun-manager")
	if err := r.plugin.SignalAndWait(syscall.SIGTERM); err != nil {
		return err
	}
	code := r.plugin.ProcessState().ExitCode()
	socket := filepath.Join(kubeletdir.PluginDir, tunSocketName)
	socketState := "was removed"
	if _, err := os.Lstat(socket); err == nil {
		socketState = "is still there"
	}
	r.printf("tun-manager exited with code %d; %s %s\n", code, socket, socketState)
	r.printf("The device manager logs \"ListAndWatch ended unexpectedly\" as an error, as a " +
		"kubelet does whenever a plugin stops\n")
	if code != 0 {
		return fmt.Errorf("tun-manager exited with code %d after SIGTERM, expected 0", code)
	}

	capacity, allocatable, err := r.waitForCounts("allocatable 0 after tun-manager stopped",
		false, func(_, allocatable int64) bool { return allocatable == 0 })
	if err != nil {
		return err
	}
	r.printf("The device manager now reports capacity %d, allocatable %d: it keeps the "+
		"capacity for a grace period after the plugin's stream ends\n", capacity, allocatable)
	return nil
}

// waitForCounts polls the manager's capacity and allocatable of the tun resource until done
// returns true, and returns them. It fails after registerTimeout, when ctx is cancelled, or
// when tun-manager has exited and pluginRunning is true.
func (r *run) waitForCounts(condition string, pluginRunning bool, done func(capacity, allocatable int64) bool) (capacity, allocatable int64, err error) {
	deadline := time.Now().Add(registerTimeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		capacity, allocatable = kubelet.ResourceCounts(r.manager, r.logger, kubelet.TunResource)
		if done(capacity, allocatable) {
			return capacity, allocatable, nil
		}
		state := fmt.Sprintf("capacity %d, allocatable %d; %s", capacity, allocatable,
			r.plugin.State())
		if pluginRunning && r.plugin.Exited() {
			return 0, 0, fmt.Errorf("waiting for %s: %s", condition, r.plugin.State())
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("timed out after %v waiting for %s; last state: %s",
				registerTimeout, condition, state)
		}
		select {
		case <-r.ctx.Done():
			return 0, 0, r.ctx.Err()
		case <-ticker.C:
		}
	}
}
