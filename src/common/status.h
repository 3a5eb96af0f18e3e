#pragma once

// Error handling for the whole project: fallible functions return absl::Status or
// absl::StatusOr<T>; these macros keep call sites short.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define OXG_STATUS_CONCAT_INNER_(a, b) a##b
#define OXG_STATUS_CONCAT_(a, b) OXG_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` yields a non-OK status.
#define OXG_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status oxg_status_ = (expr);       \
    if (!oxg_status_.ok()) return oxg_status_; \
  } while (false)

// `OXG_ASSIGN_OR_RETURN(auto x, Foo());` binds the value of a StatusOr or returns its error.
#define OXG_ASSIGN_OR_RETURN(lhs, expr) \
  OXG_ASSIGN_OR_RETURN_IMPL_(OXG_STATUS_CONCAT_(oxg_statusor_, __LINE__), lhs, expr)
#define OXG_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
