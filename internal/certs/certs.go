// Package certs gives the hub its TLS identity: a private CA and a server certificate created in
// the data directory on first start (so SDKs can trust the hub with NODE_EXTRA_CA_CERTS or their
// ca option), or certificates the operator supplies.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names inside the certificate directory.
const (
	CAFile        = "ca.pem"
	caKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	serverKeyFile = "server-key.pem"
)

// Lifetimes: the CA outlives many server certificates; the server certificate stays under the
// 825 days that Apple and browsers accept, in case someone points a browser at the HTTPS port.
const (
	caLifetime     = 10 * 365 * 24 * time.Hour
	serverLifetime = 825 * 24 * time.Hour
	renewBefore    = 30 * 24 * time.Hour
)

// DefaultNames are always in the generated server certificate: a hub on a laptop or in CI is
// reached as localhost over IPv4 or IPv6.
var defaultNames = []string{"localhost", "127.0.0.1", "::1"}

// Ensure makes sure dir holds a private CA and a server certificate valid for the default names
// and hostNames, creating or renewing what is missing, expiring, or lacks a name. It returns the
// server certificate and the path of the CA certificate to trust.
func Ensure(dir string, hostNames []string, now time.Time) (tls.Certificate, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, "", fmt.Errorf("create certificate directory: %w", err)
	}
	ca, caKey, err := ensureCA(dir, now)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	names := append(slices.Clone(defaultNames), hostNames...)
	slices.Sort(names)
	names = slices.Compact(names)

	certPath, keyPath := filepath.Join(dir, ServerFile), filepath.Join(dir, serverKeyFile)
	if cert, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && serverCertFits(cert, ca, names, now) {
		return cert, filepath.Join(dir, CAFile), nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"Tether"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("sign server certificate: %w", err)
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return tls.Certificate{}, "", err
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("load new server certificate: %w", err)
	}
	return cert, filepath.Join(dir, CAFile), nil
}

func ensureCA(dir string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, caKeyFile)
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	switch {
	case err == nil:
		ca, perr := x509.ParseCertificate(pair.Certificate[0])
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if perr == nil && ok && now.Before(ca.NotAfter) {
			return ca, key, nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Tether local CA", Organization: []string{"Tether"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign CA: %w", err)
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new CA: %w", err)
	}
	return ca, key, nil
}

// serverCertFits reports whether an existing server certificate can be kept.
func serverCertFits(cert tls.Certificate, ca *x509.Certificate, names []string, now time.Time) bool {
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil || now.Add(renewBefore).After(leaf.NotAfter) {
		return false
	}
	if leaf.CheckSignatureFrom(ca) != nil {
		return false
	}
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(err)
	}
	return n
}

// Load reads an operator-supplied certificate chain and key.
func Load(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate %s: %w", certFile, err)
	}
	return cert, nil
}

// Pool returns a pool holding the PEM certificates in file, for clients that trust the hub's CA.
func Pool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", file)
	}
	return pool, nil
}
