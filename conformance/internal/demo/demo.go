// Package demo walks through tun-manager against the kubelet's own device manager in the
// kubelet's device-plugin directory, printing each step as an operator would see it.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"

	"github.com/anza-labs/tun-manager/conformance/internal/kubelet"
	"github.com/anza-labs/tun-manager/conformance/internal/kubeletdir"
	"github.com/anza-labs/tun-manager/conformance/internal/tunmanager"
)

const (
	// InterfaceName is the tun interface the demo creates in its network namespace.
	InterfaceName = "demo-tun0"
	// podName is the name of the stub pod that requests one slot.
	podName = "demo"
	// tunSocketName is the socket tun-manager serves for its default resource.
	tunSocketName = "tun.sock"
	// kubernetesModule is the module path of the device manager's source.
	kubernetesModule = "k8s.io/kubernetes"
	// registerTimeout bounds a registration, which includes tun-manager's Register backoff
	// (at most 5 s between attempts) and its socket poll interval.
	registerTimeout = 30 * time.Second
	// pollInterval is how often the demo checks the manager's counts while it waits.
	pollInterval = 20 * time.Millisecond
)

// Config selects the binary and where the demo writes.
type Config struct {
	// Binary is the path of the tun-manager binary.
	Binary string
	// Out receives the steps.
	Out io.Writer
	// Log receives the logs of tun-manager and of the device manager.
	Log io.Writer
	// ManagerLogVerbosity is the klog verbosity of the device manager's log. At 0 it logs
	// only errors and a few lifecycle messages, and at 2 every connect and device update.
	ManagerLogVerbosity int
}

// ErrNotRoot is the error of Check when the process does not run as root.
var ErrNotRoot = errors.New("the demo must run as root: it serves the kubelet's Registration " +
	"socket and creates a network namespace")

// ErrInterrupted is the error of Run when its context was cancelled before the walkthrough
// finished.
var ErrInterrupted = errors.New("interrupted by a signal")

// Check returns ErrNotRoot unless the process runs as root, or a *kubeletdir.InUseError when a
// server accepts connections on a socket in the kubelet's device-plugin directory, such as a
// running kubelet. It changes nothing.
func Check() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	return kubeletdir.CheckNoLiveSockets(kubeletdir.PluginDir)
}

// KubernetesVersion returns the version of k8s.io/kubernetes built into this binary, such as
// v1.37.2, or "(unknown version)" when the build information lacks it.
func KubernetesVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown version)"
	}
	for _, module := range info.Deps {
		if module.Path != kubernetesModule {
			continue
		}
		if module.Replace != nil {
			return module.Replace.Version
		}
		return module.Version
	}
	return "(unknown version)"
}

// run is the state of one walkthrough.
type run struct {
	config  Config
	ctx     context.Context
	logger  klog.Logger
	pods    *kubelet.PodSource
	manager *devicemanager.ManagerImpl
	plugin  *tunmanager.Process
	// hadCheckpoint is true when the plugin directory contained a checkpoint before the demo.
	hadCheckpoint bool
	// cleanups run in reverse order when Run returns.
	cleanups []func() error
}

// Run checks as Check does and returns its error, writing nothing, when the check fails.
// Otherwise it claims the kubelet's device-plugin directory, starts the device manager and
// tun-manager there, and walks through a registration, an allocation and a tun interface
// created through the allocated device. Whether it succeeds, fails or ctx is cancelled, it
// stops tun-manager and the manager and restores the directory before it returns.
func Run(ctx context.Context, config Config) (err error) {
	if err := Check(); err != nil {
		return err
	}
	if err := tunmanager.CheckBinary(config.Binary); err != nil {
		return err
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("`ip` not found on PATH; install iproute2: %w", err)
	}

	logger := textlogger.NewLogger(textlogger.NewConfig(
		textlogger.Output(config.Log), textlogger.Verbosity(config.ManagerLogVerbosity)))
	r := &run{
		config: config,
		ctx:    klog.NewContext(ctx, logger),
		logger: logger,
		pods:   &kubelet.PodSource{},
	}
	defer func() {
		err = errors.Join(err, r.cleanUp())
	}()

	r.printf("Using the kubelet's device manager from Kubernetes %s\n", KubernetesVersion())
	steps := []func() error{
		r.claimPluginDir,
		r.startDeviceManager,
		r.startTunManager,
		r.showRegistration,
		func() error { return r.allocate(ipPath) },
		r.terminateTunManager,
	}
	for _, step := range steps {
		if ctx.Err() != nil {
			return ErrInterrupted
		}
		if err := step(); err != nil {
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				return ErrInterrupted
			}
			return err
		}
	}
	return nil
}

func (r *run) printf(format string, args ...any) {
	_, _ = fmt.Fprintf(r.config.Out, format, args...)
}

func (r *run) step(format string, args ...any) {
	r.printf("\n==> "+format+"\n", args...)
}

// cleanUp runs the cleanups in reverse order and returns their errors joined.
func (r *run) cleanUp() error {
	if len(r.cleanups) == 0 {
		return nil
	}
	r.step("Clean up: stop what the demo started and restore %s", kubeletdir.PluginDir)
	var errs []error
	for index := len(r.cleanups) - 1; index >= 0; index-- {
		errs = append(errs, r.cleanups[index]())
	}
	r.cleanups = nil
	return errors.Join(errs...)
}
