#pragma once

// Leaf certificates for intercepted TLS: minted on the fly per host (SNI or CONNECT target),
// signed by the interception CA and kept in a bounded LRU cache.

#include <cstddef>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "proxy/tls/ca.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::proxy::tls {

// One minted leaf. Immutable once published; shared by every connection for its host.
//
// Ownership: the LeafCertificate owns one reference to each of cert, key and ssl_ctx and frees
// them when the last shared_ptr goes. Callers borrow the raw pointers for as long as they hold
// the shared_ptr; to keep one longer, take a reference (X509_up_ref, EVP_PKEY_up_ref,
// SSL_CTX_up_ref). SSL_new(ctx) and SSL_set_SSL_CTX take their own reference, so a live
// connection never depends on the cache keeping the entry.
struct LeafCertificate {
  std::string host;    // the cache key: lower-case DNS name or canonical IP text
  bool is_ip = false;  // SAN is an iPAddress rather than a dNSName
  X509Ptr cert;        // the leaf, issued by the CA
  EvpPkeyPtr key;      // its private key (shared by all leaves, see LeafCertificateMinter)
  SslCtxPtr ssl_ctx;   // TLS server context: leaf + CA chain, TLS >= 1.2, ALPN http/1.1
  Clock::WallTime not_after;

  SSL_CTX* ctx() const { return ssl_ctx.get(); }
};

// Normalizes a host for minting: lower-cases DNS names (dropping one trailing dot), strips the
// brackets of "[v6]" and canonicalizes IP literals. Rejects empty, longer than 253, bad
// characters or empty/over-long labels with InvalidArgument. `*is_ip` tells which it was.
absl::StatusOr<std::string> NormalizeHost(std::string_view host, bool* is_ip);

class LeafCertificateMinter {
 public:
  struct Options {
    size_t capacity = 1024;  // leaves kept; least recently used go first
    // oxg_proxy_certs_minted_total; incremented once per mint. May be null.
    metrics::Counter* minted = nullptr;
  };

  // `ca` must outlive the minter. Generates the shared leaf key pair at once.
  LeafCertificateMinter(const CertificateAuthority& ca, const Clock& clock, Options options);
  LeafCertificateMinter(const CertificateAuthority& ca, const Clock& clock)
      : LeafCertificateMinter(ca, clock, Options()) {}
  LeafCertificateMinter(const LeafCertificateMinter&) = delete;
  LeafCertificateMinter& operator=(const LeafCertificateMinter&) = delete;

  // The leaf for `host` (DNS name or IPv4/IPv6 literal, any case): from the cache, or minted.
  // Thread-safe. Concurrent misses for one host mint once; the others wait for that result.
  // A cached leaf within a day of its expiry is minted again.
  absl::StatusOr<std::shared_ptr<const LeafCertificate>> Get(std::string_view host);

  size_t size() const;
  size_t capacity() const { return options_.capacity; }

 private:
  using Result = absl::StatusOr<std::shared_ptr<const LeafCertificate>>;
  using Lru = std::list<std::shared_ptr<const LeafCertificate>>;

  Result Mint(const std::string& host, bool is_ip) const;

  const CertificateAuthority& ca_;
  const Clock& clock_;
  const Options options_;
  // Design choice: ONE key pair (ECDSA P-256, generated at construction) serves every leaf.
  // A leaf's key guards nothing the CA key does not already: whoever holds the process memory
  // holds the CA key too. Sharing it saves a key generation per mint and keeps memory small;
  // each leaf still has its own certificate, serial and SSL_CTX. mitmproxy does the same.
  EvpPkeyPtr leaf_key_;

  mutable std::mutex mu_;
  Lru lru_;  // front = most recently used
  std::unordered_map<std::string, Lru::iterator> index_;
  std::unordered_map<std::string, std::shared_future<Result>> in_flight_;
};

}  // namespace oxg::proxy::tls
