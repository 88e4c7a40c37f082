// Package console is `kindlab console`: the workshop's labs in a browser,
// a page per attendee's cluster and a live matrix for the instructor
// (provision/console serves them; backend.go connects it to kindlab).
package console

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	pconsole "github.com/kindlab/kindlab/provision/console"
	"github.com/kindlab/kindlab/provision/lab"
	"github.com/kindlab/kindlab/provision/state"
)

// DefaultListen is where the console listens unless told otherwise: this
// machine only, no tokens.
const DefaultListen = "127.0.0.1:8480"

// ServerOptions say what a console serves.
type ServerOptions struct {
	// Fleet limits it to one fleet's clusters ("" = every lab kindlab runs).
	Fleet string
	// Tokens turns per-attendee and instructor tokens on.
	Tokens bool
	// Labs are extra lab files (--file), for clusters of labs outside
	// the catalog whose record does not name a readable file.
	Labs cli.LabFlags
	// RegistryImage is the registry image a reset starts should the
	// registry be gone (as `kindlab reset --registry-image`).
	RegistryImage string
	// Refresh is how often clusters and saved results are read again (0: 2s).
	Refresh time.Duration
}

// NewServer returns a console over the clusters kindlab recorded that run
// on the command's engine, started (it reads them now and then every
// Refresh until ctx is done).
func NewServer(ctx context.Context, o ServerOptions) (*pconsole.Server, error) {
	store, err := state.Default()
	if err != nil {
		return nil, err
	}
	p, err := cli.Provider(ctx, nil)
	if err != nil {
		return nil, cli.WithCode(cli.ExitNoDocker, err)
	}
	b := &backend{store: store, provider: p, labs: o.Labs, fleet: o.Fleet, regImage: o.RegistryImage, labsOf: map[string]resolvedLab{}}
	title := ""
	if o.Fleet != "" {
		title = "fleet " + o.Fleet
	}
	s, err := pconsole.New(pconsole.Options{Lister: b, Checker: b, Resetter: b, Kubeconfigs: b, Inspector: b, Activity: b,
		Tokens: o.Tokens, Refresh: o.Refresh, Title: title})
	if err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// URLs are the console's addresses: the instructor's page and each
// attendee's, carrying their tokens when tokens are on.
type URLs struct {
	Listen     string            `json:"listen"`
	Tokens     bool              `json:"tokens"`
	Instructor string            `json:"instructor"`
	Attendees  map[string]string `json:"attendees"`
}

// URLsOf builds the URLs of s under base (e.g. http://10.0.0.5:8480).
func URLsOf(s *pconsole.Server, base, listen string) URLs {
	u := URLs{Listen: listen, Tokens: s.InstructorToken() != "", Instructor: base + "/", Attendees: map[string]string{}}
	toks := s.AttendeeTokens()
	if u.Tokens {
		u.Instructor += "?token=" + url.QueryEscape(s.InstructorToken())
	}
	for _, c := range s.Clusters() {
		a := base + "/c/" + url.PathEscape(c)
		if u.Tokens {
			a += "?token=" + url.QueryEscape(toks[c])
		}
		u.Attendees[c] = a
	}
	return u
}

// NewCommand returns the console command.
func NewCommand(s *cli.Streams) *cobra.Command {
	var (
		labs      cli.LabFlags
		out       cli.Output
		listen    string
		fleet     string
		advertise string
		regImage  string
	)
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve the labs in a browser: steps and Check buttons per attendee, a live matrix for the instructor",
		Long: "Serves every running lab kindlab brought up on this engine (or one fleet's clusters) as web pages:\n" +
			"an attendee's page shows the lab's steps with commands for that cluster's context, a Check\n" +
			"button per feature, Reset, the kubeconfig, and the nodes with their zones and pods; the\n" +
			"instructor's page shows clusters × checks, updated live as checks run anywhere, with check and\n" +
			"reset for any cluster and the up/down/reset activity. Every page has its JSON twin (?o=json,\n" +
			"/api/…).\n\n" +
			"By default it listens on " + DefaultListen + " only, without tokens. With --listen on another\n" +
			"address (a room), every URL carries a token: one per attendee, opening only that attendee's\n" +
			"cluster (and its kubeconfig), and one for the instructor; all are printed at start. A request\n" +
			"without a valid token gets 401. Buttons are POSTs with a CSRF token and same-origin only.\n\n" +
			"It runs until Ctrl-C.",
		Example: "  kindlab console\n  kindlab console --fleet nftables --listen 0.0.0.0:8480\n  kindlab console --listen 0.0.0.0:8480 --advertise lab.example.org -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, port, err := net.SplitHostPort(listen)
			if err != nil {
				return cli.Usagef("--listen %q: %v; want HOST:PORT, e.g. %s or 0.0.0.0:8480", listen, err, DefaultListen)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
				return cli.Usagef("--listen %q: port %q is not a number from 0 to 65535", listen, port)
			}
			if host != "" && host != "localhost" && net.ParseIP(host) == nil {
				return cli.Usagef("--listen %q: host %q is not an IP address (or localhost); want e.g. 0.0.0.0:8480 for every interface", listen, host)
			}
			if fleet != "" {
				if err := lab.ValidateName(fleet); err != nil {
					return cli.Usagef("--fleet %q: %v", fleet, err)
				}
			}
			loopback := host == "localhost" || (net.ParseIP(host) != nil && net.ParseIP(host).IsLoopback())
			ctx := cmd.Context()
			srv, err := NewServer(ctx, ServerOptions{Fleet: fleet, Tokens: !loopback, Labs: labs, RegistryImage: regImage})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("console: listen on %s: %w (another console running? choose another port with --listen)", listen, err)
			}
			addr := ln.Addr().(*net.TCPAddr)
			shown := advertise
			if shown == "" {
				shown = advertiseHost(host)
			}
			base := "http://" + net.JoinHostPort(shown, strconv.Itoa(addr.Port))
			urls := URLsOf(srv, base, ln.Addr().String())
			if out.JSON() {
				if err := cli.PrintJSON(s.Out, urls); err != nil {
					return err
				}
			} else {
				printURLs(s, urls, fleet)
			}
			hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second,
				BaseContext: func(net.Listener) context.Context { return ctx }}
			errc := make(chan error, 1)
			go func() { errc <- hs.Serve(ln) }()
			select {
			case err := <-errc:
				return fmt.Errorf("console: %w", err)
			case <-ctx.Done():
			}
			// Page streams end with ctx (their requests' base context).
			shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := hs.Shutdown(shut); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("console: shut down: %w", err)
			}
			fmt.Fprintln(s.ErrOut, "Console stopped.")
			return nil
		},
	}
	labs.AddFlags(cmd)
	out.AddFlag(cmd, "table", "json")
	cmd.Flags().StringVar(&listen, "listen", DefaultListen, "HOST:PORT to serve on; any address but loopback turns tokens on")
	cmd.Flags().StringVar(&fleet, "fleet", "", "serve only this fleet's clusters (kindlab up --count)")
	cmd.Flags().StringVar(&advertise, "advertise", "", "host name or address to print in the URLs (default: the listen address, or this machine's first LAN address for 0.0.0.0)")
	cmd.Flags().StringVar(&regImage, "registry-image", os.Getenv("KINDLAB_REGISTRY_IMAGE"),
		"registry image a reset starts should the registry be gone (default $KINDLAB_REGISTRY_IMAGE)")
	return cmd
}

// advertiseHost is the host attendees reach: the listen address, or for
// every interface this machine's first non-loopback IPv4 address.
func advertiseHost(host string) string {
	ip := net.ParseIP(host)
	if host != "" && (ip == nil || !ip.IsUnspecified()) {
		return host
	}
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
	}
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return "127.0.0.1"
}

func printURLs(s *cli.Streams, u URLs, fleet string) {
	what := "every lab kindlab runs on this engine"
	if fleet != "" {
		what = "fleet " + fleet
	}
	fmt.Fprintf(s.ErrOut, "Console for %s on %s (Ctrl-C stops it).\n", what, u.Listen)
	if !u.Tokens {
		fmt.Fprintln(s.ErrOut, "Listening on loopback: this machine only, no tokens.")
	} else {
		fmt.Fprintln(s.ErrOut, "Each URL carries its token: hand each attendee theirs only. Clusters that come up later get theirs on the instructor's page.")
	}
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "instructor\t%s\n", u.Instructor)
	names := make([]string, 0, len(u.Attendees))
	for c := range u.Attendees {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		fmt.Fprintf(w, "%s\t%s\n", c, u.Attendees[c])
	}
	_ = w.Flush()
	if len(names) == 0 {
		fmt.Fprintln(s.ErrOut, "No running labs yet: start one with kindlab up; it shows on the instructor's page.")
	}
}
