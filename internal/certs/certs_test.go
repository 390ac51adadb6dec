package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEnsureCreatesVerifiableServerCert(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	cert, caPath, err := Ensure(dir, []string{"hub.example.com"}, now)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := Pool(caPath)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "hub.example.com"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "127.0.0.2", Roots: pool}); err == nil {
		t.Error("certificate verified for a name it should not carry")
	}
	if info, err := os.Stat(filepath.Join(dir, caKeyFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode: %v %v", info.Mode(), err)
	}
}

func TestEnsureKeepsOrRenews(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	first, _, err := Ensure(dir, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	same, _, err := Ensure(dir, nil, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if string(same.Certificate[0]) != string(first.Certificate[0]) {
		t.Error("certificate was replaced although it still fits")
	}
	withName, _, err := Ensure(dir, []string{"edge.local"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if string(withName.Certificate[0]) == string(first.Certificate[0]) {
		t.Error("certificate kept although a host name was added")
	}
	late, _, err := Ensure(dir, []string{"edge.local"}, now.Add(serverLifetime-renewBefore/2))
	if err != nil {
		t.Fatal(err)
	}
	if string(late.Certificate[0]) == string(withName.Certificate[0]) {
		t.Error("certificate kept although it expires soon")
	}
}

func TestTLSHandshakeWithGeneratedCA(t *testing.T) {
	dir := t.TempDir()
	cert, caPath, err := Ensure(dir, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := Pool(caPath)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c.Close()
}
