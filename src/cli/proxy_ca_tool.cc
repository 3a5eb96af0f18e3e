#include "cli/proxy_ca_tool.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "common/strings.h"
#include "common/write_all.h"
#include "proxy/tls/ca.h"

extern char** environ;

namespace oxg::cli {
namespace {

using proxy::tls::OpenSslErrors;
using proxy::tls::X509Ptr;

constexpr char kPrefix[] = "0xgenctl proxy ca: ";
constexpr char kNssNickname[] = "0xgen interception CA";

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

// A failure: the exit code and the message (without the prefix).
struct Failure {
  int code = 0;
  std::string message;
};

bool ReadWholeFile(const std::string& path, std::string* data, Failure* failure) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *failure = {2, Cat(path, ": ", std::strerror(errno))};
    return false;
  }
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *failure = {2, Cat(path, ": ", std::strerror(errno))};
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    data->append(buf, static_cast<size_t>(n));
    if (data->size() > (1u << 20)) {
      *failure = {2, Cat(path, ": larger than 1 MiB, not a certificate file")};
      ::close(fd);
      return false;
    }
  }
  ::close(fd);
  return true;
}

// Reads the first certificate of a PEM file (a DER file is accepted too). Any private key in
// the same file is skipped, never decoded.
X509Ptr ParseCertificate(const std::string& path, const std::string& data, Failure* failure) {
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    OpenSslErrors();  // clear the queue; the message below says what matters
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    cert.reset(d2i_X509(nullptr, &p, static_cast<long>(data.size())));
    if (cert && p != reinterpret_cast<const unsigned char*>(data.data()) + data.size()) {
      cert.reset();  // trailing bytes: not a DER certificate after all
    }
    OpenSslErrors();
  }
  if (cert) return cert;
  if (data.find("PRIVATE KEY-----") != std::string::npos) {
    *failure = {2, Cat(path,
                       ": holds a private key, not a certificate; give the CA certificate "
                       "(ca.pem), not its key")};
  } else {
    *failure = {2, Cat(path, ": holds no PEM or DER certificate")};
  }
  return nullptr;
}

std::string ColonHex(const unsigned char* bytes, size_t n) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out.push_back(':');
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 15]);
  }
  return out;
}

std::string Encode(X509* cert, bool der) {
  if (der) {
    unsigned char* buf = nullptr;
    const int n = i2d_X509(cert, &buf);
    if (n <= 0) return {};
    std::string out(reinterpret_cast<char*>(buf), static_cast<size_t>(n));
    OPENSSL_free(buf);
    return out;
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return {};
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

// Writes `data` to `path` (created 0644, replaced atomically through a temp file).
int WriteFileAtomically(const std::string& path, std::string_view data) {
  std::string tmp = Cat(path, ".tmp.XXXXXX");
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) return errno;
  int err = ::fchmod(fd, 0644) == 0 ? 0 : errno;
  if (err == 0) err = WriteAll(fd, data);
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) ::unlink(tmp.c_str());
  return err;
}

// Finds `name` in PATH; empty when absent.
std::string FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    const size_t colon = rest.find(':');
    const std::string_view piece = rest.substr(0, colon);
    const std::string dir = piece.empty() ? std::string(".") : std::string(piece);
    const std::string candidate = Cat(dir, "/", name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  return {};
}

// Runs argv[0] (looked up in PATH) with the same stdout/stderr and waits for it. Returns its
// exit status, or -1 with `*error` set when it could not be run or died of a signal.
int RunProgram(const std::vector<std::string>& args, std::string* error) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
  if (rc != 0) {
    *error = Cat("cannot run ", args[0], ": ", std::strerror(rc));
    return -1;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      *error = Cat("waiting for ", args[0], ": ", std::strerror(errno));
      return -1;
    }
  }
  if (WIFEXITED(status)) {
    if (WEXITSTATUS(status) == 127) *error = Cat(args[0], " could not be executed");
    return WEXITSTATUS(status);
  }
  *error = Cat(args[0], " was killed by signal ", WTERMSIG(status));
  return -1;
}

bool InstallSystem(const ProxyCaOptions& options, X509* cert, const std::string& fingerprint_hex,
                   std::ostream& out, Failure* failure) {
  const std::string target =
      Cat(options.system_ca_dir, "/0xgen-", fingerprint_hex.substr(0, 16), ".crt");
  struct stat st;
  if (::stat(options.system_ca_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *failure = {1, Cat("--install: ", options.system_ca_dir,
                       " is not a directory; is the ca-certificates package installed?")};
    return false;
  }
  // update-ca-certificates only picks up PEM files named *.crt.
  const int err = WriteFileAtomically(target, Encode(cert, /*der=*/false));
  if (err != 0) {
    if (err == EACCES || err == EPERM || err == EROFS) {
      *failure = {1, Cat("--install needs root: cannot write ", target, ": ", std::strerror(err),
                         " (run it with sudo)")};
    } else {
      *failure = {1, Cat("--install: cannot write ", target, ": ", std::strerror(err))};
    }
    return false;
  }
  out << "installed " << target << "\n" << std::flush;
  std::string error;
  const int rc = RunProgram({options.update_command}, &error);
  if (rc != 0) {
    *failure = {1, Cat("--install: ",
                       error.empty() ? Cat(options.update_command, " exited with ", rc) : error,
                       "; the certificate is in ", target)};
    return false;
  }
  out << "ran " << options.update_command << "\n";
  return true;
}

bool InstallNss(const ProxyCaOptions& options, X509* cert, std::ostream& out, Failure* failure) {
  const std::string& dir = options.install_nss;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *failure = {2, Cat("--install-nss: ", dir,
                       " is not a directory (give a browser profile or "
                       "~/.pki/nssdb)")};
    return false;
  }
  const std::string certutil = FindInPath("certutil");
  if (certutil.empty()) {
    *failure = {1,
                "--install-nss: certutil not found in PATH; install the libnss3-tools "
                "package (apt-get install libnss3-tools)"};
    return false;
  }
  // certutil gets a temp file with the certificate alone, whatever else the input held.
  char tmp[] = "/tmp/0xgen-ca-XXXXXX";
  const int fd = ::mkstemp(tmp);
  if (fd < 0) {
    *failure = {1, Cat("--install-nss: cannot create a temp file: ", std::strerror(errno))};
    return false;
  }
  int err = WriteAll(fd, Encode(cert, /*der=*/false));
  ::close(fd);
  if (err != 0) {
    ::unlink(tmp);
    *failure = {1, Cat("--install-nss: cannot write ", tmp, ": ", std::strerror(err))};
    return false;
  }
  std::string error;
  const int rc = RunProgram(
      {certutil, "-d", Cat("sql:", dir), "-A", "-t", "C,,", "-n", kNssNickname, "-a", "-i", tmp},
      &error);
  ::unlink(tmp);
  if (rc != 0) {
    *failure = {1,
                Cat("--install-nss: ", error.empty() ? Cat("certutil exited with ", rc) : error)};
    return false;
  }
  out << "added \"" << kNssNickname << "\" to sql:" << dir << "\n";
  return true;
}

int Run(const ProxyCaOptions& options, std::ostream& out, std::ostream& err, Failure* failure) {
  if (options.format != "pem" && options.format != "der") {
    *failure = {2, Cat("--format: \"", options.format, "\" is not pem or der")};
    return failure->code;
  }
  const std::string path = options.cert.empty() ? Cat(options.data_dir, "/ca.pem") : options.cert;
  std::string data;
  if (!ReadWholeFile(path, &data, failure)) return failure->code;
  X509Ptr cert = ParseCertificate(path, data, failure);
  if (!cert) return failure->code;
  if (X509_check_ca(cert.get()) != 1) {
    OpenSslErrors();
    *failure = {2, Cat(path, ": not a CA certificate (basicConstraints CA:TRUE is missing)")};
    return failure->code;
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) < 0) {
    err << kPrefix << "warning: " << path << " has expired; 0xgend refuses it, start it with "
        << "both CA files removed to generate a new one\n";
  }

  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (X509_digest(cert.get(), EVP_sha256(), md, &md_len) != 1) {
    *failure = {1, Cat(path, ": cannot compute the fingerprint: ", OpenSslErrors())};
    return failure->code;
  }
  const std::string fingerprint = ColonHex(md, md_len);
  std::string fingerprint_hex;
  for (char c : fingerprint) {
    if (c != ':') fingerprint_hex.push_back(static_cast<char>(std::tolower(c)));
  }

  const bool installing = options.install || !options.install_nss.empty();
  const std::string encoded = Encode(cert.get(), options.format == "der");
  if (encoded.empty()) {
    *failure = {1, Cat(path, ": cannot encode the certificate: ", OpenSslErrors())};
    return failure->code;
  }
  if (!options.out.empty()) {
    const int err = WriteFileAtomically(options.out, encoded);
    if (err != 0) {
      *failure = {1, Cat("--out: cannot write ", options.out, ": ", std::strerror(err))};
      return failure->code;
    }
  } else if (!options.fingerprint && !installing) {
    out << encoded << std::flush;
  }
  if (options.fingerprint) out << fingerprint << "\n";
  if (options.install && !InstallSystem(options, cert.get(), fingerprint_hex, out, failure)) {
    return failure->code;
  }
  if (!options.install_nss.empty() && !InstallNss(options, cert.get(), out, failure)) {
    return failure->code;
  }
  return out.good() ? 0 : (*failure = {1, "cannot write to stdout"}, 1);
}

}  // namespace

const char kProxyCaHelpFooter[] =
    "0xgend signs the certificates it shows clients for intercepted HTTPS with this CA. A\n"
    "client trusts the interception only once it trusts the CA:\n"
    "  curl:     curl --proxy http://127.0.0.1:8080 --cacert ./oxg-data/ca.pem https://...\n"
    "  system:   sudo 0xgenctl proxy ca --install   (Debian/Ubuntu: copies it to\n"
    "            /usr/local/share/ca-certificates and runs update-ca-certificates; curl, wget\n"
    "            and other OpenSSL/GnuTLS clients then trust it without --cacert)\n"
    "  Chrome:   on Linux it reads ~/.pki/nssdb: 0xgenctl proxy ca --install-nss ~/.pki/nssdb\n"
    "            (or Settings > Privacy and security > Security > Manage certificates)\n"
    "  Firefox:  keeps its own store: Settings > Privacy & Security > Certificates > View\n"
    "            Certificates > Authorities > Import (the PEM file, tick \"identify websites\"),\n"
    "            or: 0xgenctl proxy ca --install-nss ~/.mozilla/firefox/<profile>\n"
    "--install-nss needs certutil (package libnss3-tools). Check what you trust with\n"
    "--fingerprint. The private key (ca-key.pem) is never read or printed; keep it secret.";

int ProxyCa(const ProxyCaOptions& options, std::ostream& out, std::ostream& err) {
  Failure failure;
  const int rc = Run(options, out, err, &failure);
  if (rc != 0) err << kPrefix << failure.message << "\n";
  return rc;
}

}  // namespace oxg::cli
