#include "proxy/tls/leaf_cache.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <utility>

#include "absl/status/status.h"
#include "common/strings.h"

namespace oxg::proxy::tls {
namespace {

constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kAlpnHttp11, sizeof kAlpnHttp11, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no common protocol: carry on without ALPN
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

absl::Status MintError(std::string_view host, std::string_view what) {
  return absl::InternalError(Cat("minting a leaf for ", host, ": ", what, ": ", OpenSslErrors()));
}

bool AddExt(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

bool IsDnsChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

}  // namespace

absl::StatusOr<std::string> NormalizeHost(std::string_view host, bool* is_ip) {
  *is_ip = false;
  if (host.empty()) return absl::InvalidArgumentError("empty host");
  if (host.size() > 255) {
    return absl::InvalidArgumentError(
        Cat("host longer than 253 characters: ", host.substr(0, 64), "..."));
  }
  std::string_view h = host;
  const bool bracketed = h.size() >= 2 && h.front() == '[' && h.back() == ']';
  if (bracketed) h = h.substr(1, h.size() - 2);
  const std::string text(h);
  char buf[INET6_ADDRSTRLEN];
  if (text.find(':') != std::string::npos) {
    in6_addr a6;
    if (::inet_pton(AF_INET6, text.c_str(), &a6) != 1 ||
        ::inet_ntop(AF_INET6, &a6, buf, sizeof buf) == nullptr) {
      return absl::InvalidArgumentError(Cat("invalid IPv6 address: ", host));
    }
    *is_ip = true;
    return std::string(buf);
  }
  if (bracketed) return absl::InvalidArgumentError(Cat("invalid IPv6 address: ", host));
  in_addr a4;
  if (::inet_pton(AF_INET, text.c_str(), &a4) == 1 &&
      ::inet_ntop(AF_INET, &a4, buf, sizeof buf) != nullptr) {
    *is_ip = true;
    return std::string(buf);
  }
  std::string name = text;
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (name.empty() || name.size() > 253) {
    return absl::InvalidArgumentError(
        name.empty() ? std::string("empty host")
                     : Cat("host longer than 253 characters: ", name.substr(0, 64), "..."));
  }
  size_t label = 0;
  for (char& c : name) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c == '.') {
      if (label == 0) return absl::InvalidArgumentError(Cat("empty label in host: ", host));
      label = 0;
      continue;
    }
    if (!IsDnsChar(c)) {
      return absl::InvalidArgumentError(Cat("invalid character in host: ", host));
    }
    if (++label > 63) return absl::InvalidArgumentError(Cat("label over 63 characters: ", host));
  }
  if (label == 0) return absl::InvalidArgumentError(Cat("empty label in host: ", host));
  return name;
}

LeafCertificateMinter::LeafCertificateMinter(const CertificateAuthority& ca, const Clock& clock,
                                             Options options)
    : ca_(ca), clock_(clock), options_(options), leaf_key_(EVP_EC_gen("P-256")) {}

size_t LeafCertificateMinter::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

LeafCertificateMinter::Result LeafCertificateMinter::Mint(const std::string& host,
                                                          bool is_ip) const {
  if (!leaf_key_) return MintError(host, "no leaf key (generation failed at startup)");
  auto leaf = std::make_shared<LeafCertificate>();
  leaf->host = host;
  leaf->is_ip = is_ip;
  X509* cert = X509_new();
  leaf->cert.reset(cert);
  if (cert == nullptr) return MintError(host, "X509_new");
  X509_set_version(cert, X509_VERSION_3);

  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return MintError(host, "RAND_bytes");
  serial[0] &= 0x7f;
  serial[0] |= 0x01;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  const bool serial_ok =
      bn != nullptr && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != nullptr;
  BN_free(bn);
  if (!serial_ok) return MintError(host, "serial");

  const Clock::WallTime now = clock_.Now();
  const Clock::WallTime not_after =
      std::min(now + std::chrono::hours(24 * 397),
               std::chrono::time_point_cast<Clock::WallTime::duration>(ca_.not_after()));
  const time_t nb = std::chrono::system_clock::to_time_t(now) - 3600;
  const time_t na = std::chrono::system_clock::to_time_t(not_after);
  if (ASN1_TIME_set(X509_getm_notBefore(cert), nb) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert), na) == nullptr) {
    return MintError(host, "validity");
  }
  leaf->not_after = std::chrono::system_clock::from_time_t(na);

  const std::string cn = host.substr(0, 64);
  if (X509_NAME_add_entry_by_NID(X509_get_subject_name(cert), NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1 ||
      X509_set_issuer_name(cert, X509_get_subject_name(ca_.cert())) != 1 ||
      X509_set_pubkey(cert, leaf_key_.get()) != 1) {
    return MintError(host, "names");
  }

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca_.cert(), cert, nullptr, nullptr, 0);
  const std::string san = Cat(is_ip ? "IP:" : "DNS:", host);
  if (!AddExt(cert, &ctx, NID_basic_constraints, "CA:FALSE") ||
      !AddExt(cert, &ctx, NID_key_usage, "critical,digitalSignature") ||
      !AddExt(cert, &ctx, NID_ext_key_usage, "serverAuth") ||
      !AddExt(cert, &ctx, NID_subject_alt_name, san.c_str()) ||
      !AddExt(cert, &ctx, NID_authority_key_identifier, "keyid:always")) {
    return MintError(host, "extensions");
  }
  if (X509_sign(cert, ca_.key(), EVP_sha256()) == 0) return MintError(host, "signing");

  EVP_PKEY_up_ref(leaf_key_.get());
  leaf->key.reset(leaf_key_.get());

  SSL_CTX* sctx = SSL_CTX_new(TLS_server_method());
  leaf->ssl_ctx.reset(sctx);
  if (sctx == nullptr) return MintError(host, "SSL_CTX_new");
  SSL_CTX_set_min_proto_version(sctx, TLS1_2_VERSION);
  SSL_CTX_set_options(sctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate(sctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey(sctx, leaf_key_.get()) != 1 ||
      SSL_CTX_add1_chain_cert(sctx, ca_.cert()) != 1) {
    return MintError(host, "SSL_CTX setup");
  }
  SSL_CTX_set_alpn_select_cb(sctx, SelectAlpn, nullptr);

  if (options_.minted != nullptr) options_.minted->Inc();
  return std::shared_ptr<const LeafCertificate>(std::move(leaf));
}

absl::StatusOr<std::shared_ptr<const LeafCertificate>> LeafCertificateMinter::Get(
    std::string_view host) {
  bool is_ip = false;
  auto key = NormalizeHost(host, &is_ip);
  if (!key.ok()) return key.status();

  std::unique_lock<std::mutex> lock(mu_);
  if (auto it = index_.find(*key); it != index_.end()) {
    std::shared_ptr<const LeafCertificate> leaf = *it->second;
    if (clock_.Now() + std::chrono::hours(24) < leaf->not_after) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return leaf;
    }
    // Close to expiry: mint a fresh one below (the old one serves until it is replaced).
  }
  if (auto it = in_flight_.find(*key); it != in_flight_.end()) {
    std::shared_future<Result> pending = it->second;
    lock.unlock();
    return pending.get();
  }
  std::promise<Result> promise;
  in_flight_.emplace(*key, promise.get_future().share());
  lock.unlock();

  Result result = Mint(*key, is_ip);

  lock.lock();
  if (result.ok()) {
    if (auto it = index_.find(*key); it != index_.end()) {
      lru_.erase(it->second);
      index_.erase(it);
    }
    lru_.push_front(*result);
    index_.emplace(*key, lru_.begin());
    const size_t cap = std::max<size_t>(1, options_.capacity);
    while (lru_.size() > cap) {
      index_.erase(lru_.back()->host);
      lru_.pop_back();
    }
  }
  in_flight_.erase(*key);
  lock.unlock();
  promise.set_value(result);
  return result;
}

}  // namespace oxg::proxy::tls
