// Command tether is an open-source, self-hosted IoT hub wire-compatible with Azure IoT Hub's
// device messaging. `tether serve` runs the hub; the other commands are clients of its service API.
package main

import (
	"os"

	"github.com/tetherhub/tether/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
