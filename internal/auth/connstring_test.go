package auth

import "testing"

func TestParseConnectionString(t *testing.T) {
	tests := []struct {
		in      string
		want    ConnectionString
		wantErr bool
	}{
		{
			in:   "HostName=hub.example;DeviceId=dev1;SharedAccessKey=" + keyA,
			want: ConnectionString{HostName: "hub.example", DeviceID: "dev1", SharedAccessKey: keyA},
		},
		{
			in:   "HostName=hub.example;DeviceId=dev1;ModuleId=m1;SharedAccessKey=" + keyA,
			want: ConnectionString{HostName: "hub.example", DeviceID: "dev1", ModuleID: "m1", SharedAccessKey: keyA},
		},
		{
			in:   "HostName=hub.example;SharedAccessKeyName=iothubowner;SharedAccessKey=" + keyA + ";",
			want: ConnectionString{HostName: "hub.example", SharedAccessKeyName: "iothubowner", SharedAccessKey: keyA},
		},
		{
			in:   "HostName=localhost;DeviceId=dev1;SharedAccessSignature=SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=a%3D&se=1",
			want: ConnectionString{HostName: "localhost", DeviceID: "dev1", SharedAccessSignature: "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=a%3D&se=1"},
		},
		{
			in:   "HostName=hub.example;DeviceId=dev1;x509=true",
			want: ConnectionString{HostName: "hub.example", DeviceID: "dev1", X509: true},
		},
		{
			in:   "HostName=hub.example;DeviceId=dev1;SharedAccessKey=" + keyA + ";GatewayHostName=localhost:18883",
			want: ConnectionString{HostName: "hub.example", DeviceID: "dev1", SharedAccessKey: keyA, GatewayHostName: "localhost:18883"},
		},
		{in: "DeviceId=dev1;SharedAccessKey=" + keyA, wantErr: true},
		{in: "HostName=h;HostName=h", wantErr: true},
		{in: "HostName=h;Hostname=h", wantErr: true},
		{in: "HostName=h;DeviceId", wantErr: true},
		{in: "HostName=h;DeviceId=d;x509=yes", wantErr: true},
		{in: "HostName=h;DeviceId=d;x509=true;SharedAccessKey=" + keyA, wantErr: true},
		{in: "HostName=h;DeviceId=d;SharedAccessSignature=x;SharedAccessKey=" + keyA, wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseConnectionString(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseConnectionString(%q) = %+v, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseConnectionString(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		again, err := ParseConnectionString(got.String())
		if err != nil || again != got {
			t.Errorf("String round trip of %q = %+v, %v", got.String(), again, err)
		}
	}
}

func TestConnectionStringBuilders(t *testing.T) {
	tests := []struct {
		cs   ConnectionString
		want string
	}{
		{DeviceConnectionString("h", "d1", "k="), "HostName=h;DeviceId=d1;SharedAccessKey=k="},
		{ModuleConnectionString("h", "d1", "m1", "k="), "HostName=h;DeviceId=d1;ModuleId=m1;SharedAccessKey=k="},
		{ServiceConnectionString("h", "service", "k="), "HostName=h;SharedAccessKeyName=service;SharedAccessKey=k="},
	}
	for _, tt := range tests {
		if got := tt.cs.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
