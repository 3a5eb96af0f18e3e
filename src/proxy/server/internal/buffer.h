#pragma once
// A flat read buffer: bytes [begin, end) are unread, [end, capacity) is free space for the next
// read. Compacts lazily and grows by doubling up to a caller-given cap, so a connection's
// memory stays small until a large head needs room.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace oxg::proxy::internal {

class ReadBuffer {
 public:
  explicit ReadBuffer(size_t initial) : data_(new char[initial]), capacity_(initial) {}

  std::string_view view() const { return {data_.get() + begin_, end_ - begin_}; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }

  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }

  // Free space for a read: compacts when the tail is short, grows (up to max_capacity) when
  // the unread bytes fill the buffer. Returns {nullptr, 0} when full at max_capacity.
  std::pair<char*, size_t> Prepare(size_t max_capacity) {
    if (capacity_ - end_ < 4096 && begin_ > 0) {
      std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (end_ == capacity_ && capacity_ < max_capacity) {
      size_t grown = std::min(max_capacity, capacity_ * 2);
      std::unique_ptr<char[]> bigger(new char[grown]);
      std::memcpy(bigger.get(), data_.get() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
      data_ = std::move(bigger);
      capacity_ = grown;
    }
    return {data_.get() + end_, capacity_ - end_};
  }
  void Commit(size_t n) { end_ += n; }
  size_t capacity() const { return capacity_; }

 private:
  std::unique_ptr<char[]> data_;
  size_t capacity_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace oxg::proxy::internal
