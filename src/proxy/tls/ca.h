#pragma once

// The interception CA (contract §2, --proxy-ca-cert / --proxy-ca-key): loaded from PEM files
// or, when both are missing, generated (ECDSA P-256) and written next to the daemon's data.

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"

namespace oxg::proxy::tls {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct EvpPkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

// A CA certificate and its private key. Movable, not copyable; the raw pointers it hands out
// stay owned by it (up-ref them to keep them longer). Read-only use is thread-safe.
class CertificateAuthority {
 public:
  CertificateAuthority(X509Ptr cert, EvpPkeyPtr key);
  CertificateAuthority(CertificateAuthority&&) = default;
  CertificateAuthority& operator=(CertificateAuthority&&) = default;

  X509* cert() const { return cert_.get(); }
  EVP_PKEY* key() const { return key_.get(); }
  // The end of the CA's validity; leaves never outlive it.
  Clock::WallTime not_after() const { return not_after_; }
  // The certificate in PEM form (what `0xgenctl proxy ca` prints).
  std::string CertPem() const;
  // The subject's common name.
  std::string CommonName() const;

 private:
  X509Ptr cert_;
  EvpPkeyPtr key_;
  Clock::WallTime not_after_;
};

// Generates a fresh CA in memory: ECDSA P-256, subject CN "0xgen interception CA <suffix>",
// O "0xgen", basicConstraints critical CA:TRUE pathlen:0, keyUsage critical
// keyCertSign+cRLSign, subjectKeyIdentifier, valid from now-1h for 10 years, random serial.
absl::StatusOr<CertificateAuthority> GenerateCa(const Clock& clock);

// Contract §2: both files missing -> GenerateCa and write both (key 0600 and cert 0644, each
// atomically through a temp file and rename); exactly one present -> error naming both paths;
// both present -> load them, check the key matches the certificate and that the certificate
// is a currently valid CA, else an error naming the offending file.
absl::StatusOr<CertificateAuthority> LoadOrCreateCa(const std::string& cert_path,
                                                    const std::string& key_path,
                                                    const Clock& clock);

// The last OpenSSL error queue entries as text (and clears the queue). For messages.
std::string OpenSslErrors();

// Seconds since the epoch <-> Clock::WallTime, for ASN1 times.
Clock::WallTime AsnTimeToWall(const ASN1_TIME* t);

}  // namespace oxg::proxy::tls
