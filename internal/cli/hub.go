package cli

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/tetherhub/tether/internal/auth"
	"github.com/tetherhub/tether/internal/hub"
	"github.com/tetherhub/tether/internal/server"
)

// HubCmd groups hub-level commands.
type HubCmd struct {
	ConnectionString HubConnectionStringCmd `cmd:"" name:"connection-string" help:"Print a shared access policy's connection string."`
}

// HubConnectionStringCmd prints a policy connection string from the local data directory.
type HubConnectionStringCmd struct {
	Policy string `name:"policy" default:"iothubowner" help:"Policy name (iothubowner, service, device, registryRead, registryReadWrite)."`
}

// Run prints the connection string; it needs no running hub.
func (h *HubConnectionStringCmd) Run(env *Env, c *CLI) error {
	state, err := hub.LoadState(c.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no hub in %s: `tether serve` creates one", c.DataDir)
	}
	if err != nil {
		return err
	}
	p, ok := state.Policy(h.Policy)
	if !ok {
		return fmt.Errorf("the hub has no policy %q", h.Policy)
	}
	host := "localhost"
	if run, err := server.ReadRunFile(c.DataDir); err == nil {
		host = run.HostName
	}
	fmt.Fprintln(env.Stdout, auth.ServiceConnectionString(host, p.Name, p.PrimaryKey).String())
	return nil
}
