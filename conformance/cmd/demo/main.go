// Command demo walks through tun-manager against the kubelet's own device manager from
// k8s.io/kubernetes, in the kubelet's device-plugin directory /var/lib/kubelet/device-plugins,
// and restores that directory when it exits. scripts/demo builds and runs it.
//
// Usage:
//
//	demo [--manager-log-verbosity N] TUN_MANAGER
//	demo --check
//
// --check only checks that the demo can run here, and prints why not.
//
// Exit codes: 0 done; 1 failed; 2 invalid usage or not root; 3 a kubelet or another server
// accepts connections on a socket in the plugin directory, so the demo changed nothing; 130
// interrupted by a signal, after cleaning up.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/anza-labs/tun-manager/conformance/internal/demo"
	"github.com/anza-labs/tun-manager/conformance/internal/kubeletdir"
)

const (
	exitFailed      = 1
	exitUsage       = 2
	exitInUse       = 3
	exitInterrupted = 130
)

func main() {
	os.Exit(run())
}

func run() int {
	flags := flag.NewFlagSet("demo", flag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprintf(flags.Output(), "usage: demo [--manager-log-verbosity N] TUN_MANAGER\n"+
			"       demo --check\n")
		flags.PrintDefaults()
	}
	check := flags.Bool("check", false, "only check that the demo can run here: print the "+
		"reason and exit 3 if a server accepts connections on a socket in "+kubeletdir.PluginDir)
	verbosity := flags.Int("manager-log-verbosity", 0, "klog verbosity of the device "+
		"manager's log; 2 shows every plugin connection and device update")
	if err := flags.Parse(os.Args[1:]); err != nil {
		return exitUsage
	}

	if *check {
		if flags.NArg() != 0 {
			flags.Usage()
			return exitUsage
		}
		return report(demo.Check(), true)
	}
	if flags.NArg() != 1 {
		flags.Usage()
		return exitUsage
	}

	// The first SIGINT, SIGTERM or SIGHUP cancels ctx, and Run then cleans up. Later signals
	// are caught too, so a second Ctrl-C cannot cut the cleanup short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM,
		syscall.SIGHUP)
	defer stop()
	err := demo.Run(ctx, demo.Config{
		Binary:              flags.Arg(0),
		Out:                 os.Stdout,
		Log:                 os.Stderr,
		ManagerLogVerbosity: *verbosity,
	})
	return report(err, false)
}

// report prints err as one line on stderr and returns the exit code for it. For --check it
// prints an *kubeletdir.InUseError with no prefix or suffix, because scripts/demo shows that
// line as the reason for using the stand-in kubelet.
func report(err error, check bool) int {
	var inUse *kubeletdir.InUseError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &inUse) && check:
		fmt.Fprintln(os.Stderr, err)
		return exitInUse
	case errors.As(err, &inUse):
		fmt.Fprintf(os.Stderr, "demo: %v, so the demo does not run here\n", err)
		return exitInUse
	case errors.Is(err, demo.ErrInterrupted):
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return exitInterrupted
	case errors.Is(err, demo.ErrNotRoot):
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return exitUsage
	default:
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		return exitFailed
	}
}
