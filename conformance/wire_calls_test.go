package conformance

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// receiveDevices reads the next ListAndWatch message and returns its devices as ID → health.
func receiveDevices(t *testing.T, stream grpc.ServerStreamingClient[pluginapi.ListAndWatchResponse]) map[string]string {
	t.Helper()
	response, err := stream.Recv()
	if err != nil {
		t.Fatalf("ListAndWatch receive failed: %v", err)
	}
	devices := map[string]string{}
	for _, device := range response.Devices {
		devices[device.ID] = device.Health
	}
	return devices
}

// checkDevices fails the test unless devices are tun0 … tun{slots-1}, all with health.
func checkDevices(t *testing.T, devices map[string]string, slots int, health string) {
	t.Helper()
	if len(devices) != slots {
		t.Fatalf("ListAndWatch sent %d devices, expected %d: %v", len(devices), slots, devices)
	}
	for index := range slots {
		id := fmt.Sprintf("tun%d", index)
		if got, ok := devices[id]; !ok || got != health {
			t.Errorf("device %s has health %q (listed: %v), expected %q", id, got, ok, health)
		}
	}
}

func TestWireListAndWatch(t *testing.T) {
	node := filepath.Join(t.TempDir(), "tun")
	makeCharDevice(t, node, 10, 200)
	plugin := startWirePlugin(t, 3, "--device-path", node)
	client := dialPlugin(t, "unix://"+plugin.socket)
	ctx, cancel := context.WithTimeout(context.Background(), registerTimeout)
	defer cancel()
	stream, err := client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("ListAndWatch failed: %v", err)
	}

	checkDevices(t, receiveDevices(t, stream), 3, pluginapi.Healthy)

	// Every change of the device node sends the full list again.
	if err := os.Remove(node); err != nil {
		t.Fatalf("failed to remove %s: %v", node, err)
	}
	checkDevices(t, receiveDevices(t, stream), 3, pluginapi.Unhealthy)

	makeCharDevice(t, node, 10, 200)
	checkDevices(t, receiveDevices(t, stream), 3, pluginapi.Healthy)
}

func TestWireAllocate(t *testing.T) {
	plugin := startWirePlugin(t, 4)
	client := dialPlugin(t, "unix://"+plugin.socket)

	response, err := client.Allocate(callContext(t), allocateRequest([]string{"tun1"},
		[]string{"tun0", "tun3"}))
	if err != nil {
		t.Fatalf("Allocate of valid IDs failed: %v", err)
	}
	if len(response.ContainerResponses) != 2 {
		t.Fatalf("Allocate returned %d container responses for 2 container requests",
			len(response.ContainerResponses))
	}
	for index, container := range response.ContainerResponses {
		if len(container.Devices) != 1 {
			t.Errorf("container response %d has %d devices, expected 1: %+v", index,
				len(container.Devices), container.Devices)
			continue
		}
		device := container.Devices[0]
		if device.HostPath != "/dev/net/tun" || device.ContainerPath != "/dev/net/tun" ||
			device.Permissions != "rwm" {
			t.Errorf("container response %d has device %+v, expected /dev/net/tun on host "+
				"and in container with permissions rwm", index, device)
		}
	}

	rejected := []struct {
		name       string
		containers [][]string
		// id is the ID the error message must name; empty when there is none to name.
		id string
	}{
		{name: "index past the last slot", containers: [][]string{{"tun4"}}, id: "tun4"},
		{name: "other prefix", containers: [][]string{{"gpu0"}}, id: "gpu0"},
		{name: "leading zero", containers: [][]string{{"tun01"}}, id: "tun01"},
		{name: "same ID twice", containers: [][]string{{"tun2", "tun2"}}, id: "tun2"},
		{name: "unknown ID in second container", containers: [][]string{{"tun0"}, {"tun9"}},
			id: "tun9"},
		{name: "container without IDs", containers: [][]string{{}}},
	}
	for _, test := range rejected {
		t.Run(test.name, func(t *testing.T) {
			_, err := client.Allocate(callContext(t), allocateRequest(test.containers...))
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Allocate(%v) returned %v, expected code InvalidArgument",
					test.containers, err)
			}
			message := status.Convert(err).Message()
			if !strings.Contains(message, test.id) {
				t.Errorf("Allocate(%v) error %q does not name ID %q", test.containers, message,
					test.id)
			}
		})
	}
}

func TestWireGetPreferredAllocation(t *testing.T) {
	plugin := startWirePlugin(t, 4)
	client := dialPlugin(t, "unix://"+plugin.socket)
	available := []string{"tun3", "tun2", "tun1", "tun0"}
	request := &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
			{AvailableDeviceIDs: available, MustIncludeDeviceIDs: []string{"tun1"},
				AllocationSize: 2},
			{AvailableDeviceIDs: available, AllocationSize: 1},
		},
	}

	response, err := client.GetPreferredAllocation(callContext(t), request)
	if err != nil {
		t.Fatalf("GetPreferredAllocation failed: %v", err)
	}
	if len(response.ContainerResponses) != len(request.ContainerRequests) {
		t.Fatalf("GetPreferredAllocation returned %d container responses for %d requests",
			len(response.ContainerResponses), len(request.ContainerRequests))
	}
	for index, container := range request.ContainerRequests {
		chosen := response.ContainerResponses[index].DeviceIDs
		if len(chosen) != int(container.AllocationSize) {
			t.Errorf("container %d: chose %v, expected %d IDs", index, chosen,
				container.AllocationSize)
		}
		for _, id := range container.MustIncludeDeviceIDs {
			if !slices.Contains(chosen, id) {
				t.Errorf("container %d: chose %v without the must-include ID %s", index,
					chosen, id)
			}
		}
		seen := map[string]bool{}
		for _, id := range chosen {
			if !slices.Contains(available, id) || seen[id] {
				t.Errorf("container %d: chose %v, which repeats or is not among available %v",
					index, chosen, available)
			}
			seen[id] = true
		}
	}
}

func TestWirePathAuthority(t *testing.T) {
	plugin := startWirePlugin(t, 2)
	dialUnix := grpc.WithContextDialer(func(ctx context.Context, address string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", address)
	})
	cases := []struct {
		name    string
		target  string
		options []grpc.DialOption
	}{
		{name: "unix URI, default authority", target: "unix://" + plugin.socket},
		{name: "unix URI without slashes", target: "unix:" + plugin.socket},
		{name: "kubelet plugin path as authority", target: "unix://" + plugin.socket,
			options: []grpc.DialOption{grpc.WithAuthority(kubeletPluginDir + "/" + tunSocketName)}},
		{name: "own socket path as authority", target: "unix://" + plugin.socket,
			options: []grpc.DialOption{grpc.WithAuthority(plugin.socket)}},
		// A bare path under the passthrough resolver makes the path the authority, as kubelets
		// that dialed the socket path with a custom dialer sent it.
		{name: "passthrough path target", target: "passthrough:///" + plugin.socket,
			options: []grpc.DialOption{dialUnix}},
		// The device manager of kubelet v1.37 dials this way.
		{name: "passthrough with localhost authority", target: "passthrough:///" + plugin.socket,
			options: []grpc.DialOption{dialUnix, grpc.WithAuthority("localhost")}},
	}
	for _, test := range cases {
		t.Run(test.name, func(t *testing.T) {
			client := dialPlugin(t, test.target, test.options...)
			if _, err := client.GetDevicePluginOptions(callContext(t), &pluginapi.Empty{}); err != nil {
				t.Fatalf("GetDevicePluginOptions via %s failed: %v", test.target, err)
			}
			_, err := client.Allocate(callContext(t), allocateRequest([]string{"tun0"}))
			if err != nil {
				t.Fatalf("Allocate via %s failed: %v", test.target, err)
			}
		})
	}
}
