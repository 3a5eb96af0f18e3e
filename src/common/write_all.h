#pragma once

// Writing a whole buffer to a file descriptor, retrying short writes and EINTR.

#include <errno.h>
#include <unistd.h>

#include <cstddef>
#include <string_view>

namespace oxg {

// Writes all of `data` to `fd`. Returns 0, or the errno of the write that failed (EIO when the
// kernel accepted nothing without saying why). `*written` receives the bytes that did reach
// the file either way, so a caller can repair a partial record.
inline int WriteAll(int fd, std::string_view data, size_t* written = nullptr) {
  size_t done = 0;
  int err = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (n == 0) {
      err = EIO;
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (written != nullptr) *written = done;
  return err;
}

}  // namespace oxg
