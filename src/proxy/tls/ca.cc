#include "proxy/tls/ca.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

#include "absl/status/status.h"
#include "common/status.h"
#include "common/strings.h"
#include "common/write_all.h"

namespace oxg::proxy::tls {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

absl::Status SslError(std::string_view what) {
  return absl::InternalError(Cat("proxy CA: ", what, ": ", OpenSslErrors()));
}

bool AddExt(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

std::string RandomHex(size_t bytes) {
  unsigned char buf[16];
  if (bytes > sizeof buf) bytes = sizeof buf;
  RAND_bytes(buf, static_cast<int>(bytes));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    out.push_back(kHex[buf[i] >> 4]);
    out.push_back(kHex[buf[i] & 15]);
  }
  return out;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Writes `data` to a temp file beside `path` with `mode`, fsyncs it, and returns its name.
absl::StatusOr<std::string> WriteTemp(const std::string& path, std::string_view data, mode_t mode) {
  std::string tmp = Cat(path, ".tmp.XXXXXX");
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    return absl::InternalError(
        Cat("proxy CA: cannot create a temp file for ", path, ": ", std::strerror(errno)));
  }
  int err = ::fchmod(fd, mode) == 0 ? 0 : errno;
  if (err == 0) err = WriteAll(fd, data);
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(Cat("proxy CA: cannot write ", path, ": ", std::strerror(err)));
  }
  return tmp;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(Cat("cannot open ", path, ": ", std::strerror(errno)));
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(Cat("cannot read ", path, ": ", std::strerror(err)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (1u << 20)) {
      ::close(fd);
      return absl::InvalidArgumentError(Cat(path, " is too large for a PEM file"));
    }
  }
  ::close(fd);
  return out;
}

absl::Status WriteCa(const CertificateAuthority& ca, const std::string& cert_path,
                     const std::string& key_path) {
  BioPtr key_bio(BIO_new(BIO_s_mem()));
  if (!key_bio || PEM_write_bio_PrivateKey(key_bio.get(), ca.key(), nullptr, nullptr, 0, nullptr,
                                           nullptr) != 1) {
    return SslError("encoding the key");
  }
  const std::string key_pem = BioToString(key_bio.get());
  const std::string cert_pem = ca.CertPem();
  auto key_tmp = WriteTemp(key_path, key_pem, 0600);
  if (!key_tmp.ok()) return key_tmp.status();
  auto cert_tmp = WriteTemp(cert_path, cert_pem, 0644);
  if (!cert_tmp.ok()) {
    ::unlink(key_tmp->c_str());
    return cert_tmp.status();
  }
  if (::rename(key_tmp->c_str(), key_path.c_str()) != 0) {
    const int err = errno;
    ::unlink(key_tmp->c_str());
    ::unlink(cert_tmp->c_str());
    return absl::InternalError(Cat("proxy CA: cannot write ", key_path, ": ", std::strerror(err)));
  }
  if (::rename(cert_tmp->c_str(), cert_path.c_str()) != 0) {
    const int err = errno;
    ::unlink(cert_tmp->c_str());
    ::unlink(key_path.c_str());  // never leave one file of the pair behind
    return absl::InternalError(Cat("proxy CA: cannot write ", cert_path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<CertificateAuthority> LoadCa(const std::string& cert_path,
                                            const std::string& key_path, const Clock& clock) {
  auto cert_pem = ReadFile(cert_path);
  if (!cert_pem.ok())
    return absl::InvalidArgumentError(Cat("proxy CA: ", cert_pem.status().message()));
  auto key_pem = ReadFile(key_path);
  if (!key_pem.ok())
    return absl::InvalidArgumentError(Cat("proxy CA: ", key_pem.status().message()));

  BioPtr cbio(BIO_new_mem_buf(cert_pem->data(), static_cast<int>(cert_pem->size())));
  X509Ptr cert(PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return absl::InvalidArgumentError(
        Cat("proxy CA: ", cert_path, " holds no PEM certificate: ", OpenSslErrors()));
  }
  BioPtr kbio(BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())));
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(
        Cat("proxy CA: ", key_path, " holds no unencrypted PEM private key: ", OpenSslErrors()));
  }
  if (X509_check_ca(cert.get()) != 1) {
    return absl::InvalidArgumentError(
        Cat("proxy CA: ", cert_path, " is not a CA certificate (needs basicConstraints CA:TRUE)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    OpenSslErrors();
    return absl::InvalidArgumentError(
        Cat("proxy CA: the key in ", key_path, " does not match the certificate in ", cert_path));
  }
  CertificateAuthority ca(std::move(cert), std::move(key));
  if (ca.not_after() <= clock.Now()) {
    return absl::InvalidArgumentError(Cat("proxy CA: ", cert_path, " has expired"));
  }
  return ca;
}

}  // namespace

std::string OpenSslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out.append("; ");
    out.append(buf);
  }
  return out.empty() ? std::string("unknown OpenSSL error") : out;
}

Clock::WallTime AsnTimeToWall(const ASN1_TIME* t) {
  struct tm tm;
  std::memset(&tm, 0, sizeof tm);
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return Clock::WallTime();
  return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

CertificateAuthority::CertificateAuthority(X509Ptr cert, EvpPkeyPtr key)
    : cert_(std::move(cert)),
      key_(std::move(key)),
      not_after_(AsnTimeToWall(X509_get0_notAfter(cert_.get()))) {}

std::string CertificateAuthority::CertPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert_.get()) != 1) return {};
  return BioToString(bio.get());
}

std::string CertificateAuthority::CommonName() const {
  char buf[256];
  const int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert_.get()), NID_commonName, buf,
                                          sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

absl::StatusOr<CertificateAuthority> GenerateCa(const Clock& clock) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return SslError("generating the key");
  X509Ptr cert(X509_new());
  if (!cert) return SslError("X509_new");
  X509_set_version(cert.get(), X509_VERSION_3);

  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return SslError("RAND_bytes");
  serial[0] &= 0x7f;
  serial[0] |= 0x01;  // positive and a full 16 bytes
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  const bool serial_ok =
      bn != nullptr && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get())) != nullptr;
  BN_free(bn);
  if (!serial_ok) return SslError("serial");

  const time_t now = std::chrono::system_clock::to_time_t(clock.Now());
  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), now - 3600) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), now + 3652L * 24 * 3600) == nullptr) {
    return SslError("validity");
  }

  X509_NAME* name = X509_get_subject_name(cert.get());
  const std::string cn = Cat("0xgen interception CA ", RandomHex(4));
  if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>("0xgen"), -1, -1, 0) != 1 ||
      X509_set_issuer_name(cert.get(), name) != 1) {
    return SslError("subject");
  }
  if (X509_set_pubkey(cert.get(), key.get()) != 1) return SslError("public key");

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  if (!AddExt(cert.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
      !AddExt(cert.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
      !AddExt(cert.get(), &ctx, NID_subject_key_identifier, "hash")) {
    return SslError("extensions");
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) return SslError("signing");
  return CertificateAuthority(std::move(cert), std::move(key));
}

absl::StatusOr<CertificateAuthority> LoadOrCreateCa(const std::string& cert_path,
                                                    const std::string& key_path,
                                                    const Clock& clock) {
  const bool have_cert = Exists(cert_path);
  const bool have_key = Exists(key_path);
  if (have_cert && have_key) return LoadCa(cert_path, key_path, clock);
  if (have_cert != have_key) {
    return absl::FailedPreconditionError(
        Cat("proxy CA: ", have_cert ? cert_path : key_path, " exists but ",
            have_cert ? key_path : cert_path,
            " does not; provide both the CA certificate and its key, or neither to generate them"));
  }
  auto ca = GenerateCa(clock);
  if (!ca.ok()) return ca.status();
  OXG_RETURN_IF_ERROR(WriteCa(*ca, cert_path, key_path));
  return ca;
}

}  // namespace oxg::proxy::tls
