// 0xgend (also installed as glyphd): flag parsing here, everything else in the daemon library.

#include <iostream>

#include "daemon/config.h"
#include "daemon/daemon.h"

int main(int argc, char** argv) {
  oxg::daemon::ParseResult parsed = oxg::daemon::ParseCommandLine(argc, argv, std::cout, std::cerr);
  if (parsed.exit_code.has_value()) return *parsed.exit_code;
  return oxg::daemon::Run(parsed.config);
}
