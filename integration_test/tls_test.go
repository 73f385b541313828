package integration_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backfill/backfill/internal/pgtest"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM string
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key, certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// serverCert issues a certificate for 127.0.0.1 and returns it and its key
// in PEM.
func (ca testCA) serverCert(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

// TestTLSWithAVerifiedCertificate: the server gets a certificate from a CA
// made for the test, and a role that may only connect over TLS. A job
// whose URLs say sslmode=verify-full and name that CA in sslrootcert runs;
// naming another CA fails on the certificate, before anything is written.
func TestTLSWithAVerifiedCertificate(t *testing.T) {
	if pgtest.Path() != pgtest.PathLocal {
		t.Skipf("this test turns on TLS in the server's configuration and sets its key file's mode: only on a local cluster the harness started, and this run uses %s", pgtest.Path())
	}
	db := itemsDatabase(t, 5000)
	dataDir := queryString(t, db, "SHOW data_directory")
	hba := queryString(t, db, "SHOW hba_file")
	originalHBA := queryString(t, db, "SELECT pg_read_file($1)", hba)

	ca, otherCA := newTestCA(t, "backfill test CA"), newTestCA(t, "some other CA")
	certPEM, keyPEM := ca.serverCert(t)
	certFile, keyFile := filepath.Join(dataDir, "bf_test_server.crt"), filepath.Join(dataDir, "bf_test_server.key")
	writeServerFile(t, db, certFile, certPEM)
	writeServerFile(t, db, keyFile, keyPEM)
	// COPY TO leaves 0644; PostgreSQL refuses a key others can read. The
	// local cluster's files are ours (or, as root, the postgres user's).
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	// bf_tls is refused without TLS, so a run that succeeds used it
	rules := "hostssl all bf_tls 127.0.0.1/32 trust\nhostnossl all bf_tls 127.0.0.1/32 reject\n"
	sql(t, db,
		"DROP ROLE IF EXISTS bf_tls",
		"CREATE ROLE bf_tls LOGIN SUPERUSER",
		"ALTER SYSTEM SET ssl_cert_file = "+quoteLiteral(certFile),
		"ALTER SYSTEM SET ssl_key_file = "+quoteLiteral(keyFile),
		"ALTER SYSTEM SET ssl = on",
	)
	writeServerFile(t, db, hba, rules+originalHBA) // reloads the configuration too
	t.Cleanup(func() {
		sql(t, db, "ALTER SYSTEM RESET ssl", "ALTER SYSTEM RESET ssl_cert_file", "ALTER SYSTEM RESET ssl_key_file")
		writeServerFile(t, db, hba, originalHBA)
		sql(t, db, "DROP OWNED BY bf_tls", "DROP ROLE bf_tls")
	})

	dir := t.TempDir()
	caFile, otherFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "other.crt")
	if err := os.WriteFile(caFile, []byte(ca.certPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(otherFile, []byte(otherCA.certPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsURL := func(rootCert string) string {
		u, err := url.Parse(db)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.User("bf_tls")
		q := u.Query()
		q.Set("sslmode", "verify-full")
		q.Set("sslrootcert", rootCert)
		u.RawQuery = q.Encode()
		return u.String()
	}
	plain := strings.Replace(db, "postgres://postgres@", "postgres://bf_tls@", 1)
	if r := cli(t, "status", "--dest", plain); r.code != 1 || !strings.Contains(r.stderr, "no encryption") {
		t.Fatalf("bf_tls without TLS must be refused by the server, got %s", r)
	}

	if r := cli(t, "start", "--source", tlsURL(otherFile), "--job", "tls", "--from", "src", "--to", "dst", "--connect-timeout", "5s"); r.code != 1 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("a server certificate from another CA must fail verification, got %s", r)
	}
	if schemaExists(t, db, "backfill") || queryInt(t, db, "SELECT count(*) FROM dst") != 0 {
		t.Fatal("a refused TLS connection wrote something")
	}

	good := tlsURL(caFile)
	mustSucceed(t, "start", "--source", good, "--job", "tls", "--from", "src", "--to", "dst", "--rate", "0")
	assertSameRows(t, db, "src", db, "dst")
	if s := status(t, good, "tls"); s.State != "done" || s.RowsInserted != 5000 {
		t.Fatalf("status over TLS: %+v", s)
	}
}
