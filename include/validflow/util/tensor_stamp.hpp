#pragma once
// TensorStamp: which tensor, which storage and which version of its values, so that a cache derived from
// parameters (folded BatchNorms, pre-packed convolution weights) knows when to derive again: another tensor
// (to(), load), another storage, or an in-place update (copy_, load_state_dict, an optimizer step). Writes that
// bypass the version counter (through data_ptr or `.data()`) are not seen; inference tensors have no version
// counter, so a cache must not rely on a stamp of one (`versioned()`).
#include <torch/torch.h>

#include <cstdint>

namespace validflow {

struct TensorStamp {
  const void* impl = nullptr;
  const void* data = nullptr;
  int64_t version = -1;

  static TensorStamp of(const torch::Tensor& t) {
    if (!t.defined()) return {};
    return {t.unsafeGetTensorImpl(), t.data_ptr(), t.is_inference() ? -1 : t._version()};
  }
  /// Whether in-place updates of `t` are seen by its stamp (undefined tensors count: they never change).
  static bool versioned(const torch::Tensor& t) { return !t.defined() || !t.is_inference(); }

  bool operator==(const TensorStamp& o) const { return impl == o.impl && data == o.data && version == o.version; }
  bool operator!=(const TensorStamp& o) const { return !(*this == o); }
};

}  // namespace validflow
