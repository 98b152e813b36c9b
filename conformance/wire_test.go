package conformance

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// callTimeout bounds one unary call to tun-manager.
const callTimeout = 5 * time.Second

// standInKubelet is a minimal kubelet Registration service that records every Register
// request and accepts it without dialing the plugin back.
type standInKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	requests chan *pluginapi.RegisterRequest
}

func (k *standInKubelet) Register(_ context.Context, request *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	select {
	case k.requests <- request:
	default:
		// The tests read only the first requests; later ones are accepted and dropped.
	}
	return &pluginapi.Empty{}, nil
}

// startStandInKubelet serves the stand-in Registration service on dir/kubelet.sock until the
// test ends.
func startStandInKubelet(t *testing.T, dir string) *standInKubelet {
	t.Helper()
	socket := filepath.Join(dir, "kubelet.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatalf("failed to listen on %s: %v", socket, err)
	}
	kubelet := &standInKubelet{requests: make(chan *pluginapi.RegisterRequest, 16)}
	server := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(server, kubelet)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return kubelet
}

// nextRequest waits for the next Register request.
func (k *standInKubelet) nextRequest(t *testing.T, plugin *tunManager) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case request := <-k.requests:
		return request
	case <-time.After(registerTimeout):
		t.Fatalf("timed out after %v waiting for a Register request; %s", registerTimeout,
			plugin.State())
		return nil
	}
}

// wirePlugin is tun-manager serving in a temporary plugin directory beside a stand-in kubelet.
type wirePlugin struct {
	dir      string
	socket   string
	kubelet  *standInKubelet
	process  *tunManager
	register *pluginapi.RegisterRequest
}

// startWirePlugin starts tun-manager with slots slots and extra flags in a temporary plugin
// directory, and waits for its first Register request, which it sends only once it serves.
func startWirePlugin(t *testing.T, slots int, extra ...string) *wirePlugin {
	t.Helper()
	dir := t.TempDir()
	kubelet := startStandInKubelet(t, dir)
	args := append([]string{"--plugin-dir", dir, "--devices", strconv.Itoa(slots)}, extra...)
	process := startTunManager(t, args...)
	return &wirePlugin{
		dir:      dir,
		socket:   filepath.Join(dir, tunSocketName),
		kubelet:  kubelet,
		process:  process,
		register: kubelet.nextRequest(t, process),
	}
}

// dialPlugin opens a gRPC client connection to target that is closed when the test ends.
func dialPlugin(t *testing.T, target string, options ...grpc.DialOption) pluginapi.DevicePluginClient {
	t.Helper()
	options = append(options, grpc.WithTransportCredentials(insecure.NewCredentials()))
	connection, err := grpc.NewClient(target, options...)
	if err != nil {
		t.Fatalf("failed to create a gRPC client for %s: %v", target, err)
	}
	t.Cleanup(func() { _ = connection.Close() })
	return pluginapi.NewDevicePluginClient(connection)
}

// callContext returns a context for one unary call, cancelled when the test ends.
func callContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// allocateRequest builds an AllocateRequest with one container request per ID list.
func allocateRequest(containers ...[]string) *pluginapi.AllocateRequest {
	request := &pluginapi.AllocateRequest{}
	for _, ids := range containers {
		request.ContainerRequests = append(request.ContainerRequests,
			&pluginapi.ContainerAllocateRequest{DevicesIds: ids})
	}
	return request
}

func TestWireRegisterRequest(t *testing.T) {
	plugin := startWirePlugin(t, 4)

	request := plugin.register
	if request.Version != pluginapi.Version {
		t.Errorf("Register version is %q, expected %q", request.Version, pluginapi.Version)
	}
	if request.Endpoint != tunSocketName {
		t.Errorf("Register endpoint is %q, expected the socket file name %q", request.Endpoint,
			tunSocketName)
	}
	if request.ResourceName != tunResource {
		t.Errorf("Register resource name is %q, expected %q", request.ResourceName, tunResource)
	}
	if request.Options.GetPreStartRequired() || request.Options.GetGetPreferredAllocationAvailable() {
		t.Errorf("Register options are %+v, expected PreStartContainer and "+
			"GetPreferredAllocation both off", request.Options)
	}

	client := dialPlugin(t, "unix://"+plugin.socket)
	options, err := client.GetDevicePluginOptions(callContext(t), &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("GetDevicePluginOptions failed: %v", err)
	}
	if options.PreStartRequired != request.Options.GetPreStartRequired() ||
		options.GetPreferredAllocationAvailable != request.Options.GetGetPreferredAllocationAvailable() {
		t.Errorf("GetDevicePluginOptions returns %+v, but Register sent %+v", options,
			request.Options)
	}
}
