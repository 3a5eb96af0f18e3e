#pragma once

// `0xgenctl proxy ca`: shows the interception CA certificate the daemon signs its leaf
// certificates with, and helps an operator trust it (system store, NSS databases).
//
// It only ever reads the certificate: the private key is never opened, and when the given file
// also holds a key, only the certificate is re-encoded and printed.

#include <iosfwd>
#include <string>

namespace oxg::cli {

struct ProxyCaOptions {
  std::string data_dir = "./oxg-data";
  std::string cert;            // empty: <data_dir>/ca.pem
  std::string format = "pem";  // "pem" or "der"
  std::string out;             // empty: stdout
  bool fingerprint = false;    // print the SHA-256 fingerprint instead of the certificate
  bool install = false;        // copy into the system store and run update-ca-certificates
  std::string install_nss;     // an NSS database directory to add the CA to with certutil

  // Where --install puts the certificate and what it runs afterwards (Debian's layout). Not
  // flags: tests point them elsewhere.
  std::string system_ca_dir = "/usr/local/share/ca-certificates";
  std::string update_command = "update-ca-certificates";
};

// Runs the command; returns the exit code (0 ok, 1 runtime failure, 2 bad usage / bad file).
// Messages go to `err`, each starting with "0xgenctl proxy ca: ".
int ProxyCa(const ProxyCaOptions& options, std::ostream& out, std::ostream& err);

// The help footer: how to trust the CA in the common clients.
extern const char kProxyCaHelpFooter[];

}  // namespace oxg::cli
