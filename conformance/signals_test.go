package conformance

import (
	"fmt"
	"syscall"
	"testing"
)

// TestSighupKeepsRegistration checks that a re-registration requested with SIGHUP leaves the
// kubelet able to track the plugin: a later crash must still drop allocatable to 0, and a new
// tun-manager must register again.
func TestSighupKeepsRegistration(t *testing.T) {
	claimKubeletPluginDir(t)
	kubelet := startDeviceManager(t, &podSource{})
	plugin := startTunManager(t, "--devices", "4")
	kubelet.waitForCounts(t, plugin, 4, 4)

	before := registrationCount(t, tunResource)
	if err := plugin.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("%v", err)
	}
	condition := fmt.Sprintf("a Register request after SIGHUP (kubelet counted %v before)", before)
	waitFor(t, registerTimeout, condition, func() (bool, string) {
		count := registrationCount(t, tunResource)
		return count > before, fmt.Sprintf("kubelet counted %v; %s", count, plugin.State())
	})
	kubelet.waitForCounts(t, plugin, 4, 4)

	// NOTE: kubelet v1.37.2 rejects a Register for a socket it is still connected to ("device
	// plugin already connected") and, in doing so, drops its record of the live connection. It
	// then misses the end of that connection and rejects every later Register for the socket
	// until the kubelet restarts. A plugin must let the kubelet see its ListAndWatch streams
	// end before it registers the same socket again.
	plugin.kill(t)
	kubelet.waitForCounts(t, plugin, 4, 0)

	restarted := startTunManager(t, "--devices", "4")
	kubelet.waitForCounts(t, restarted, 4, 4)
}
