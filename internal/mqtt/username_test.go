package mqtt

import (
	"errors"
	"testing"
)

func TestParseUsername(t *testing.T) {
	tests := []struct {
		name, in string
		want     Username
	}{
		{"node", "localhost/dev1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)",
			Username{Host: "localhost", DeviceID: "dev1", APIVersion: "2021-04-12", ClientType: "azure-iot-device/1.18.4 (node v20.20.2; Debian 12; x64)"}},
		{"doc", "myhub.azure-devices.net/dev1/?api-version=2021-04-12",
			Username{Host: "myhub.azure-devices.net", DeviceID: "dev1", APIVersion: "2021-04-12"}},
		{"c sdk pnp", "hub:8883/dev1/?api-version=2020-09-30&DeviceClientType=iothubclient%2F1.11.0&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
			Username{Host: "hub:8883", DeviceID: "dev1", APIVersion: "2020-09-30", ClientType: "iothubclient/1.11.0", ModelID: "dtmi:com:example:Thermostat;1"}},
		{"node model first", "h/dev1/?api-version=2021-04-12&model-id=dtmi%3Ax%3By%3B1&DeviceClientType=ua",
			Username{Host: "h", DeviceID: "dev1", APIVersion: "2021-04-12", ClientType: "ua", ModelID: "dtmi:x;y;1"}},
		{"module", "h/dev1/mod1/?api-version=2021-04-12&DeviceClientType=ua",
			Username{Host: "h", DeviceID: "dev1", ModuleID: "mod1", APIVersion: "2021-04-12", ClientType: "ua"}},
		{"legacy", "h/dev1/api-version=2016-11-14&DeviceClientType=iothubclient%2F1.1.0",
			Username{Host: "h", DeviceID: "dev1", APIVersion: "2016-11-14", ClientType: "iothubclient/1.1.0"}},
		{"legacy module", "h/dev1/mod1/api-version=2016-11-14",
			Username{Host: "h", DeviceID: "dev1", ModuleID: "mod1", APIVersion: "2016-11-14"}},
		{"edgehub", "h/dev1/api-version=2017-06-30/DeviceClientType=Microsoft.Azure.Devices.Client/1.5.1-preview-003",
			Username{Host: "h", DeviceID: "dev1", APIVersion: "2017-06-30", ClientType: "Microsoft.Azure.Devices.Client/1.5.1-preview-003"}},
		{"unknown params and plus", "h/dev1/?foo=bar&api-version=1&DeviceClientType=a+b&x",
			Username{Host: "h", DeviceID: "dev1", APIVersion: "1", ClientType: "a+b"}},
		{"malformed escape kept", "h/dev1/?DeviceClientType=%zz",
			Username{Host: "h", DeviceID: "dev1", ClientType: "%zz"}},
		{"no params", "h/dev1", Username{Host: "h", DeviceID: "dev1"}},
		{"no params slash", "h/dev1/", Username{Host: "h", DeviceID: "dev1"}},
		{"module no params", "h/dev1/mod1/", Username{Host: "h", DeviceID: "dev1", ModuleID: "mod1"}},
		{"trailing slash after params", "h/dev1/?api-version=1/", Username{Host: "h", DeviceID: "dev1", APIVersion: "1"}},
		{"id chars", "h/a-b.c+d%e_f#g*h?i!j(k)l,m=n@o$p'q/?api-version=1",
			Username{Host: "h", DeviceID: "a-b.c+d%e_f#g*h?i!j(k)l,m=n@o$p'q", APIVersion: "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUsername(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseUsernameErrors(t *testing.T) {
	for _, in := range []string{"", "host", "/dev1/?api-version=1", "h//?api-version=1", "h/?api-version=1",
		"h/dev1//?api-version=1", "h/dev1/mod1/extra/?api-version=1"} {
		if u, err := ParseUsername(in); !errors.Is(err, ErrBadUsername) {
			t.Errorf("ParseUsername(%q) = %+v, %v; want ErrBadUsername", in, u, err)
		}
	}
}
