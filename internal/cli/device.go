package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/tetherhub/tether/api"
	"github.com/tetherhub/tether/internal/auth"
)

// DeviceCmd groups device identity commands.
type DeviceCmd struct {
	Create           DeviceCreateCmd           `cmd:"" help:"Create a device identity and print its connection string."`
	List             DeviceListCmd             `cmd:"" help:"List device identities."`
	Show             DeviceShowCmd             `cmd:"" help:"Show a device identity as JSON."`
	Delete           DeviceDeleteCmd           `cmd:"" help:"Delete a device identity."`
	Enable           DeviceEnableCmd           `cmd:"" help:"Enable a device: it may connect again."`
	Disable          DeviceDisableCmd          `cmd:"" help:"Disable a device: it can no longer connect."`
	ConnectionString DeviceConnectionStringCmd `cmd:"" name:"connection-string" help:"Print a device's connection string."`
	SASToken         DeviceSASTokenCmd         `cmd:"" name:"sas-token" help:"Print a SAS token signed with a device's key (like az iot hub generate-sas-token --device-id): its MQTT password."`
}

// DeviceCreateCmd creates a device.
type DeviceCreateCmd struct {
	ID           string `arg:"" help:"Device id."`
	PrimaryKey   string `name:"primary-key" help:"Base64 primary key (generated when empty)."`
	SecondaryKey string `name:"secondary-key" help:"Base64 secondary key (generated when empty)."`
	Disabled     bool   `name:"disabled" help:"Create the device disabled."`
}

// Run creates the device.
func (d *DeviceCreateCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	status := "enabled"
	if d.Disabled {
		status = "disabled"
	}
	dev, err := t.client.CreateDevice(env.ctx, api.Device{
		DeviceID: d.ID,
		Status:   status,
		Authentication: &api.Authentication{Type: "sas", SymmetricKey: &api.SymmetricKey{
			PrimaryKey: d.PrimaryKey, SecondaryKey: d.SecondaryKey,
		}},
	})
	if err != nil {
		return fmt.Errorf("create device %s: %w", d.ID, err)
	}
	fmt.Fprintln(env.Stdout, deviceConnectionString(t, dev.DeviceID, "", primaryKey(dev)))
	return nil
}

func primaryKey(d api.Device) string {
	if d.Authentication == nil || d.Authentication.SymmetricKey == nil {
		return ""
	}
	return d.Authentication.SymmetricKey.PrimaryKey
}

// DeviceListCmd lists devices.
type DeviceListCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

// Run lists the devices.
func (d *DeviceListCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	devices, err := t.client.ListDevices(env.ctx)
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	if d.JSON {
		return printJSON(env, devices)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE ID\tSTATUS\tCONNECTION\tLAST ACTIVITY")
	for _, dev := range devices {
		last := "-"
		if !dev.LastActivityTime.IsZero() && dev.LastActivityTime.Year() > 1 {
			last = dev.LastActivityTime.Format("2006-01-02T15:04:05Z07:00")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", dev.DeviceID, dev.Status, dev.ConnectionState, last)
	}
	return tw.Flush()
}

// DeviceShowCmd shows one device.
type DeviceShowCmd struct {
	ID string `arg:"" help:"Device id."`
}

// Run prints the device.
func (d *DeviceShowCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	dev, err := t.client.GetDevice(env.ctx, d.ID)
	if err != nil {
		return fmt.Errorf("show device %s: %w", d.ID, err)
	}
	return printJSON(env, dev)
}

// DeviceDeleteCmd deletes a device.
type DeviceDeleteCmd struct {
	ID string `arg:"" help:"Device id."`
}

// Run deletes the device.
func (d *DeviceDeleteCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	if err := t.client.DeleteDevice(env.ctx, d.ID, "*"); err != nil {
		return fmt.Errorf("delete device %s: %w", d.ID, err)
	}
	return nil
}

// DeviceEnableCmd enables a device.
type DeviceEnableCmd struct {
	ID string `arg:"" help:"Device id."`
}

// Run enables the device.
func (d *DeviceEnableCmd) Run(env *Env, c *CLI) error { return setStatus(env, c, d.ID, "enabled") }

// DeviceDisableCmd disables a device.
type DeviceDisableCmd struct {
	ID string `arg:"" help:"Device id."`
}

// Run disables the device.
func (d *DeviceDisableCmd) Run(env *Env, c *CLI) error { return setStatus(env, c, d.ID, "disabled") }

// setStatus reads the device and writes it back with the new status, guarded by its etag so a
// concurrent change is not overwritten.
func setStatus(env *Env, c *CLI, id, status string) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	dev, err := t.client.GetDevice(env.ctx, id)
	if err != nil {
		return fmt.Errorf("read device %s: %w", id, err)
	}
	dev.Status = status
	if _, err := t.client.UpdateDevice(env.ctx, dev, dev.ETag); err != nil {
		return fmt.Errorf("set device %s %s: %w", id, status, err)
	}
	return nil
}

// DeviceConnectionStringCmd prints a device connection string.
type DeviceConnectionStringCmd struct {
	ID        string `arg:"" help:"Device id."`
	Secondary bool   `name:"secondary" help:"Use the secondary key."`
}

// Run prints the connection string.
func (d *DeviceConnectionStringCmd) Run(env *Env, c *CLI) error {
	t, key, err := deviceKey(env.ctx, c, d.ID, d.Secondary)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, deviceConnectionString(t, d.ID, "", key))
	return nil
}

// DeviceSASTokenCmd prints a device SAS token.
type DeviceSASTokenCmd struct {
	ID        string        `arg:"" help:"Device id."`
	Duration  time.Duration `name:"duration" default:"1h" help:"How long the token is valid."`
	Secondary bool          `name:"secondary" help:"Sign with the secondary key."`
}

// Run signs the token for {host}/devices/{id}, as the device SDKs do.
func (d *DeviceSASTokenCmd) Run(env *Env, c *CLI) error {
	if d.Duration <= 0 {
		return fmt.Errorf("--duration must be positive, not %v", d.Duration)
	}
	t, key, err := deviceKey(env.ctx, c, d.ID, d.Secondary)
	if err != nil {
		return err
	}
	token, err := auth.Sign(t.hostName+"/devices/"+d.ID, "", key, time.Now().Add(d.Duration))
	if err != nil {
		return fmt.Errorf("sign a token for device %s: %w", d.ID, err)
	}
	fmt.Fprintln(env.Stdout, token)
	return nil
}

// deviceKey connects to the hub and reads a device's primary (or secondary) symmetric key.
func deviceKey(ctx context.Context, c *CLI, id string, secondary bool) (*hubTarget, string, error) {
	t, err := c.connect()
	if err != nil {
		return nil, "", err
	}
	dev, err := t.client.GetDevice(ctx, id)
	if err != nil {
		return nil, "", fmt.Errorf("read device %s: %w", id, err)
	}
	if dev.Authentication == nil || dev.Authentication.SymmetricKey == nil {
		return nil, "", fmt.Errorf("device %s does not use symmetric keys", id)
	}
	if secondary {
		return t, dev.Authentication.SymmetricKey.SecondaryKey, nil
	}
	return t, dev.Authentication.SymmetricKey.PrimaryKey, nil
}

func printJSON(env *Env, v any) error {
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
