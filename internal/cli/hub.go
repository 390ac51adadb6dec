package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/server"
)

// HubCmd groups hub-level commands.
type HubCmd struct {
	ConnectionString HubConnectionStringCmd `cmd:"" name:"connection-string" help:"Print a shared access policy's connection string."`
	SASToken         HubSASTokenCmd         `cmd:"" name:"sas-token" help:"Print a SAS token signed with a shared access policy's key, valid for the whole hub (like az iot hub generate-sas-token). With a policy that has DeviceConnect (device), it is the MQTT password of any device: what another MQTT client or load generator needs."`
}

// HubConnectionStringCmd prints a policy connection string from the local data directory.
type HubConnectionStringCmd struct {
	Policy string `name:"policy" default:"iothubowner" help:"Policy name (iothubowner, service, device, registryRead, registryReadWrite)."`
}

// Run prints the connection string; it needs no running hub.
func (h *HubConnectionStringCmd) Run(env *Env, c *CLI) error {
	host, p, err := localPolicy(c, h.Policy)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, auth.ServiceConnectionString(host, p.Name, p.PrimaryKey).String())
	return nil
}

// HubSASTokenCmd prints a policy SAS token from the local data directory.
type HubSASTokenCmd struct {
	Policy   string        `name:"policy" default:"iothubowner" help:"Policy name (iothubowner, service, device, registryRead, registryReadWrite); with --hub, its policy instead."`
	Duration time.Duration `name:"duration" default:"1h" help:"How long the token is valid."`
}

// Run signs the token for the hub's host name (sr), which covers every device and service
// resource; it needs no running hub.
func (h *HubSASTokenCmd) Run(env *Env, c *CLI) error {
	if h.Duration <= 0 {
		return fmt.Errorf("--duration must be positive, not %v", h.Duration)
	}
	host, p, err := signingPolicy(c, h.Policy)
	if err != nil {
		return err
	}
	token, err := auth.Sign(host, p.Name, p.PrimaryKey, time.Now().Add(h.Duration))
	if err != nil {
		return fmt.Errorf("sign a token with policy %s: %w", p.Name, err)
	}
	fmt.Fprintln(env.Stdout, token)
	return nil
}

// localPolicy returns the host name and a policy of the hub in the data directory.
func localPolicy(c *CLI, name string) (host string, p auth.Policy, err error) {
	state, err := hub.LoadState(c.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", p, fmt.Errorf("no hub in %s: `tether serve` creates one", c.DataDir)
	}
	if err != nil {
		return "", p, err
	}
	p, ok := state.Policy(name)
	if !ok {
		return "", p, fmt.Errorf("the hub has no policy %q", name)
	}
	host = "localhost"
	if run, err := server.ReadRunFile(c.DataDir); err == nil {
		host = run.HostName
	}
	return host, p, nil
}

// signingPolicy returns the host name and the policy that signs a token: with --hub, its
// connection string's own (whose rights are unknown here); else the named one of the hub in
// the data directory.
func signingPolicy(c *CLI, name string) (host string, p auth.Policy, err error) {
	if c.Hub == "" {
		return localPolicy(c, name)
	}
	cs, err := auth.ParseConnectionString(c.Hub)
	if err != nil {
		return "", p, fmt.Errorf("--hub: %w", err)
	}
	if cs.SharedAccessKeyName == "" {
		return "", p, errors.New("--hub is not a policy's connection string")
	}
	return hostOnly(cs.HostName), auth.Policy{Name: cs.SharedAccessKeyName, PrimaryKey: cs.SharedAccessKey}, nil
}
