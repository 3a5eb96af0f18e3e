#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proxy/tls/ca.h"
#include "proxy/tls/leaf_cache.h"
#include "telemetry/metrics/metrics.h"

namespace oxg::proxy::tls {
namespace {

using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "oxg_tls_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

mode_t Mode(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return st.st_mode & 0777;
}

std::string Der(X509* cert) {
  unsigned char* buf = nullptr;
  const int n = i2d_X509(cert, &buf);
  std::string out(reinterpret_cast<char*>(buf), static_cast<size_t>(n));
  OPENSSL_free(buf);
  return out;
}

void WriteText(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string KeyPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

// X509_verify_cert of `leaf` against a store holding only `ca`, as an SSL server cert.
int Verify(const CertificateAuthority& ca, X509* leaf) {
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca.cert());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, nullptr);
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  const int ok = X509_verify_cert(ctx);
  const int err = X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  return ok == 1 ? X509_V_OK : (err == X509_V_OK ? -1 : err);
}

TEST(CaTest, GeneratedThenReloaded) {
  TempDir dir;
  const std::string cert = dir.File("ca.pem"), key = dir.File("ca-key.pem");
  auto first = LoadOrCreateCa(cert, key, Clock::Real());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(Mode(key), 0600u);
  EXPECT_EQ(Mode(cert), 0644u);
  EXPECT_THAT(first->CommonName(), HasSubstr("0xgen interception CA "));
  EXPECT_EQ(X509_check_ca(first->cert()), 1);
  EXPECT_FALSE(std::filesystem::exists(cert + ".tmp"));

  auto second = LoadOrCreateCa(cert, key, Clock::Real());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(Der(first->cert()), Der(second->cert()));
  EXPECT_EQ(EVP_PKEY_eq(first->key(), second->key()), 1);
  EXPECT_EQ(first->CertPem(), second->CertPem());
  // Nothing but the two files in the directory (temp files renamed away).
  int files = 0;
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator(std::filesystem::path(cert).parent_path())) {
    ++files;
  }
  EXPECT_EQ(files, 2);
}

TEST(CaTest, GeneratedCaHasContractExtensions) {
  auto ca = GenerateCa(Clock::Real());
  ASSERT_TRUE(ca.ok());
  X509* c = ca->cert();
  EXPECT_EQ(EVP_PKEY_get_base_id(ca->key()), EVP_PKEY_EC);
  int crit = 0;
  auto* bc =
      static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(c, NID_basic_constraints, &crit, nullptr));
  ASSERT_NE(bc, nullptr);
  EXPECT_TRUE(bc->ca);
  EXPECT_EQ(crit, 1);
  EXPECT_EQ(ASN1_INTEGER_get(bc->pathlen), 0);
  BASIC_CONSTRAINTS_free(bc);
  EXPECT_EQ(X509_get_key_usage(c), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  EXPECT_NE(X509_get0_subject_key_id(c), nullptr);
  char org[64];
  ASSERT_GT(
      X509_NAME_get_text_by_NID(X509_get_subject_name(c), NID_organizationName, org, sizeof org),
      0);
  EXPECT_STREQ(org, "0xgen");
  EXPECT_GT(ca->not_after(), Clock::Real().Now() + std::chrono::hours(24 * 365 * 9));
  const ASN1_INTEGER* serial = X509_get0_serialNumber(c);
  EXPECT_EQ(serial->length, 16);
}

TEST(CaTest, OneFileMissingNamesBoth) {
  TempDir dir;
  const std::string cert = dir.File("ca.pem"), key = dir.File("ca-key.pem");
  ASSERT_TRUE(LoadOrCreateCa(cert, key, Clock::Real()).ok());
  std::filesystem::remove(key);
  auto r = LoadOrCreateCa(cert, key, Clock::Real());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(cert));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(key));
  EXPECT_FALSE(std::filesystem::exists(key));  // nothing generated

  TempDir dir2;
  const std::string cert2 = dir2.File("ca.pem"), key2 = dir2.File("ca-key.pem");
  WriteText(key2, "x");
  r = LoadOrCreateCa(cert2, key2, Clock::Real());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(cert2));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(key2));
}

TEST(CaTest, MismatchedKeyNamesTheKey) {
  TempDir dir;
  const std::string cert = dir.File("ca.pem"), key = dir.File("ca-key.pem");
  ASSERT_TRUE(LoadOrCreateCa(cert, key, Clock::Real()).ok());
  auto other = GenerateCa(Clock::Real());
  ASSERT_TRUE(other.ok());
  WriteText(key, KeyPem(other->key()));
  auto r = LoadOrCreateCa(cert, key, Clock::Real());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(key));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("does not match"));
}

TEST(CaTest, GarbageFilesNameTheFile) {
  TempDir dir;
  const std::string cert = dir.File("ca.pem"), key = dir.File("ca-key.pem");
  WriteText(cert, "not a certificate");
  WriteText(key, "not a key");
  auto r = LoadOrCreateCa(cert, key, Clock::Real());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(cert));
}

TEST(CaTest, NonCaCertificateRefused) {
  TempDir dir;
  const std::string cert = dir.File("ca.pem"), key = dir.File("ca-key.pem");
  auto ca = GenerateCa(Clock::Real());
  ASSERT_TRUE(ca.ok());
  LeafCertificateMinter minter(*ca, Clock::Real());
  auto leaf = minter.Get("example.com");
  ASSERT_TRUE(leaf.ok());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, (*leaf)->cert.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  WriteText(cert, std::string(data, static_cast<size_t>(n)));
  BIO_free(bio);
  WriteText(key, KeyPem((*leaf)->key.get()));
  auto r = LoadOrCreateCa(cert, key, Clock::Real());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(cert));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not a CA"));
}

class LeafTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = GenerateCa(Clock::Real());
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<CertificateAuthority>(std::move(*ca));
  }
  std::unique_ptr<CertificateAuthority> ca_;
  metrics::Registry registry_;
  metrics::Counter& minted_ =
      registry_.AddCounter("oxg_proxy_certs_minted_total", "Leaves minted.").WithLabels({});
};

TEST_F(LeafTest, DnsLeafVerifiesAgainstCa) {
  LeafCertificateMinter minter(*ca_, Clock::Real(), {.capacity = 8, .minted = &minted_});
  auto leaf = minter.Get("WWW.Example.COM");
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  X509* cert = (*leaf)->cert.get();
  EXPECT_EQ((*leaf)->host, "www.example.com");
  EXPECT_EQ(Verify(*ca_, cert), X509_V_OK);
  EXPECT_EQ(X509_check_host(cert, "www.example.com", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert, "other.example.com", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_private_key(cert, (*leaf)->key.get()), 1);
  EXPECT_EQ(X509_get_extended_key_usage(cert), static_cast<uint32_t>(XKU_SSL_SERVER));
  EXPECT_EQ(X509_get_key_usage(cert), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_NE(X509_get0_authority_key_id(cert), nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(cert),
                                  X509_get0_subject_key_id(ca_->cert())),
            0);
  EXPECT_EQ(minted_.Value(), 1u);
  // Validity: at most 397 days + 1 hour.
  const auto span = (*leaf)->not_after - Clock::Real().Now();
  EXPECT_LE(span, std::chrono::hours(24 * 397) + std::chrono::minutes(1));
  EXPECT_GT(span, std::chrono::hours(24 * 396));
  EXPECT_NE((*leaf)->ctx(), nullptr);
}

TEST_F(LeafTest, IpLeaves) {
  LeafCertificateMinter minter(*ca_, Clock::Real());
  auto v4 = minter.Get("127.0.0.1");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_TRUE((*v4)->is_ip);
  EXPECT_EQ(Verify(*ca_, (*v4)->cert.get()), X509_V_OK);
  EXPECT_EQ(X509_check_ip_asc((*v4)->cert.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc((*v4)->cert.get(), "127.0.0.2", 0), 0);
  // No dNSName SAN: only the iPAddress SAN (ignoring the CN fallback) names it.
  EXPECT_EQ(X509_check_host((*v4)->cert.get(), "127.0.0.1", 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
                            nullptr),
            0);

  auto v6 = minter.Get("[2001:DB8:0:0::1]");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ((*v6)->host, "2001:db8::1");
  EXPECT_EQ(Verify(*ca_, (*v6)->cert.get()), X509_V_OK);
  EXPECT_EQ(X509_check_ip_asc((*v6)->cert.get(), "2001:db8::1", 0), 1);
  auto again = minter.Get("2001:db8::1");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), v6->get());
}

TEST_F(LeafTest, LongHostTruncatesCn) {
  LeafCertificateMinter minter(*ca_, Clock::Real());
  const std::string host = std::string(60, 'a') + "." + std::string(60, 'b') + ".example";
  auto leaf = minter.Get(host);
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  char cn[256];
  const int n = X509_NAME_get_text_by_NID(X509_get_subject_name((*leaf)->cert.get()),
                                          NID_commonName, cn, sizeof cn);
  EXPECT_EQ(n, 64);
  EXPECT_EQ(X509_check_host((*leaf)->cert.get(), host.c_str(), host.size(), 0, nullptr), 1);
  EXPECT_EQ(Verify(*ca_, (*leaf)->cert.get()), X509_V_OK);
}

TEST_F(LeafTest, InvalidHostsRejected) {
  LeafCertificateMinter minter(*ca_, Clock::Real(), {.minted = &minted_});
  for (const std::string& bad :
       {std::string(), std::string("."), std::string("a..b"), std::string("bad host"),
        std::string("a,DNS:evil.com"), std::string("x/y"), std::string("[1.2.3.4]"),
        std::string("[::1"), std::string("fe80::1%eth0"), std::string(64, 'a') + ".com",
        std::string(254, 'a'), std::string("h\0st", 4)}) {
    auto r = minter.Get(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(minted_.Value(), 0u);
  EXPECT_TRUE(minter.Get("under_score.example.").ok());
  EXPECT_TRUE(minter.Get(std::string(63, 'a') + ".com").ok());
}

TEST_F(LeafTest, CacheHitReturnsSameObject) {
  LeafCertificateMinter minter(*ca_, Clock::Real(), {.minted = &minted_});
  auto a = minter.Get("example.com");
  auto b = minter.Get("EXAMPLE.com.");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ(minted_.Value(), 1u);
}

TEST_F(LeafTest, LruEvictionAtCapacity) {
  LeafCertificateMinter minter(*ca_, Clock::Real(), {.capacity = 2, .minted = &minted_});
  auto a = minter.Get("a.test");
  auto b = minter.Get("b.test");
  ASSERT_TRUE(minter.Get("a.test").ok());  // a is now most recent
  auto c = minter.Get("c.test");           // evicts b
  EXPECT_EQ(minter.size(), 2u);
  EXPECT_EQ(minted_.Value(), 3u);
  auto a2 = minter.Get("a.test");
  EXPECT_EQ(a2->get(), a->get());
  EXPECT_EQ(minted_.Value(), 3u);
  auto b2 = minter.Get("b.test");  // minted again
  EXPECT_NE(b2->get(), b->get());
  EXPECT_EQ(minted_.Value(), 4u);
  EXPECT_EQ(minter.size(), 2u);
  // The evicted leaf is still usable by whoever holds it.
  EXPECT_EQ(Verify(*ca_, (*b)->cert.get()), X509_V_OK);
}

TEST_F(LeafTest, ConcurrentMissesMintOnce) {
  LeafCertificateMinter minter(*ca_, Clock::Real(), {.minted = &minted_});
  constexpr int kThreads = 8;
  std::vector<const LeafCertificate*> got(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
      }
      auto leaf = minter.Get("same.example");
      got[i] = leaf.ok() ? leaf->get() : nullptr;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(minted_.Value(), 1u);
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_NE(got[i], nullptr);
    EXPECT_EQ(got[i], got[0]);
  }
}

TEST_F(LeafTest, LeafCappedAtCaExpiry) {
  // A CA close to its end: leaves must not outlive it.
  SimulatedClock past(Clock::Real().Now() - std::chrono::hours(24 * 3650));
  auto old_ca = GenerateCa(past);
  ASSERT_TRUE(old_ca.ok());
  LeafCertificateMinter minter(*old_ca, Clock::Real());
  auto leaf = minter.Get("example.com");
  ASSERT_TRUE(leaf.ok());
  EXPECT_LE((*leaf)->not_after, old_ca->not_after());
  EXPECT_EQ(X509_cmp_time(X509_get0_notAfter((*leaf)->cert.get()), nullptr) > 0, true);
}

TEST_F(LeafTest, RealHandshakeWithAlpn) {
  LeafCertificateMinter minter(*ca_, Clock::Real());
  auto leaf = minter.Get("proxy.example.test");
  ASSERT_TRUE(leaf.ok()) << leaf.status();

  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);

  SSL* server = SSL_new((*leaf)->ctx());
  SSL_set_fd(server, fds[0]);
  int server_rc = 0;
  std::thread server_thread([&] {
    server_rc = SSL_accept(server);
    if (server_rc == 1) {
      char buf[5];
      if (SSL_read(server, buf, sizeof buf) == 5) SSL_write(server, buf, 5);
    }
  });

  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  X509_STORE_add_cert(SSL_CTX_get_cert_store(client_ctx), ca_->cert());
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, nullptr);
  SSL* client = SSL_new(client_ctx);
  SSL_set_fd(client, fds[1]);
  SSL_set_tlsext_host_name(client, "proxy.example.test");
  ASSERT_EQ(SSL_set1_host(client, "proxy.example.test"), 1);
  static const unsigned char kProtos[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  ASSERT_EQ(SSL_set_alpn_protos(client, kProtos, sizeof kProtos), 0);
  const int client_rc = SSL_connect(client);
  EXPECT_EQ(client_rc, 1) << OpenSslErrors();
  std::string echoed;
  if (client_rc == 1) {
    EXPECT_EQ(SSL_get_verify_result(client), X509_V_OK);
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(client, &alpn, &alpn_len);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(alpn), alpn_len), "http/1.1");
    SSL_write(client, "hello", 5);
    char buf[5];
    if (SSL_read(client, buf, 5) == 5) echoed.assign(buf, 5);
  } else {
    ::shutdown(fds[1], SHUT_RDWR);
  }
  server_thread.join();
  EXPECT_EQ(server_rc, 1);
  EXPECT_EQ(echoed, "hello");

  SSL_free(client);
  SSL_CTX_free(client_ctx);
  SSL_free(server);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_F(LeafTest, HandshakeFailsForWrongHost) {
  LeafCertificateMinter minter(*ca_, Clock::Real());
  auto leaf = minter.Get("right.example");
  ASSERT_TRUE(leaf.ok());
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  SSL* server = SSL_new((*leaf)->ctx());
  SSL_set_fd(server, fds[0]);
  std::thread server_thread([&] { SSL_accept(server); });
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  X509_STORE_add_cert(SSL_CTX_get_cert_store(client_ctx), ca_->cert());
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, nullptr);
  SSL* client = SSL_new(client_ctx);
  SSL_set_fd(client, fds[1]);
  SSL_set1_host(client, "wrong.example");
  EXPECT_NE(SSL_connect(client), 1);
  ERR_clear_error();
  ::shutdown(fds[1], SHUT_RDWR);
  server_thread.join();
  ERR_clear_error();
  SSL_free(client);
  SSL_CTX_free(client_ctx);
  SSL_free(server);
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace oxg::proxy::tls
