// hwnas's executor_runner: times a .pte program the way ExecuTorch's examples/portable executor_runner does.
//
// Same command line (--model_path, --num_executions, --cpu_threads) and the same log lines through
// ET_LOG: "Iteration i of N: x ms" per run and "Model executed successfully N time(s) in T ms." at
// the end. Built against the executorch wheel's headers and shared libraries (bench/build_runner.sh),
// it is the x86 stand-in for the runner a phone runs; hwnas parses its output exactly like the
// phone's. Compiled with -DET_LOG_ENABLED=0 it prints no iteration lines, like a Release build
// without logging. Inputs are tensors of ones shaped from the program's method meta.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor_ptr_maker.h>
#include <executorch/runtime/platform/clock.h>
#include <executorch/runtime/platform/log.h>
#include <executorch/runtime/platform/platform.h>
#include <executorch/runtime/platform/runtime.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

// The wheel ships the thread pool's library but not its header: the two calls used here, as the library exports them.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
} // namespace executorch::extension::threadpool

using executorch::extension::module::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;

namespace {

bool flag(const char* arg, const char* name, std::string* value) {
  const size_t length = std::strlen(name);
  if (std::strncmp(arg, name, length) != 0 || arg[length] != '=') {
    return false;
  }
  *value = arg + length + 1;
  return true;
}

double ticks_to_ms(et_timestamp_t ticks) {
  const auto ratio = executorch::runtime::pal_ticks_to_ns_multiplier();
  return static_cast<double>(ticks) * ratio.numerator / ratio.denominator / 1e6;
}

} // namespace

int main(int argc, char** argv) {
  executorch::runtime::runtime_init();
  std::string model_path = "model.pte";
  long num_executions = 1;
  long cpu_threads = -1;
  for (int i = 1; i < argc; ++i) {
    std::string value;
    if (flag(argv[i], "--model_path", &value)) {
      model_path = value;
    } else if (flag(argv[i], "--num_executions", &value)) {
      num_executions = std::strtol(value.c_str(), nullptr, 10);
    } else if (flag(argv[i], "--cpu_threads", &value)) {
      cpu_threads = std::strtol(value.c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr, "ERROR: unknown command line flag '%s'\n", argv[i]);
      return 2;
    }
  }
  if (num_executions < 1) {
    std::fprintf(stderr, "ERROR: --num_executions must be at least 1\n");
    return 2;
  }
  // As ExecuTorch's executor_runner does: the shared pool (XNNPACK runs on it) resized to --cpu_threads, which is
  // also what hwnas does in process. (NoThreadPoolGuard, every op on the calling thread, timed about 2x faster on
  // a loaded 2-core VM: waking a pool thread costs a scheduler slice there.)
  if (cpu_threads > 0) {
    executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(static_cast<uint32_t>(cpu_threads));
  }

  Module module(model_path, Module::LoadMode::File);
  const Error loaded = module.load_method("forward");
  if (loaded != Error::Ok) {
    std::fprintf(stderr, "ERROR: loading method forward of %s failed with status 0x%" PRIx32 "\n", model_path.c_str(),
                 static_cast<uint32_t>(loaded));
    return 1;
  }
  ET_LOG(Info, "Model file %s is loaded.", model_path.c_str());
  auto meta = module.method_meta("forward");
  if (!meta.ok()) {
    std::fprintf(stderr, "ERROR: no method meta for forward\n");
    return 1;
  }
  std::vector<executorch::extension::TensorPtr> tensors;
  std::vector<EValue> inputs;
  for (size_t i = 0; i < meta->num_inputs(); ++i) {
    auto info = meta->input_tensor_meta(i);
    if (!info.ok()) {
      std::fprintf(stderr, "ERROR: input %zu is not a tensor\n", i);
      return 1;
    }
    std::vector<executorch::aten::SizesType> sizes(info->sizes().begin(), info->sizes().end());
    tensors.push_back(executorch::extension::ones(sizes, info->scalar_type()));
    inputs.emplace_back(tensors.back());
  }

  et_timestamp_t total = 0;
  for (long i = 0; i < num_executions; ++i) {
    const auto before = executorch::runtime::pal_current_ticks();
    auto result = module.forward(inputs);
    const auto after = executorch::runtime::pal_current_ticks();
    if (!result.ok()) {
      std::fprintf(stderr, "ERROR: execution %ld of forward failed with status 0x%" PRIx32 "\n", i,
                   static_cast<uint32_t>(result.error()));
      return 1;
    }
    total += after - before;
    ET_LOG(Info, "Iteration %ld of %ld: %f ms", i, num_executions, ticks_to_ms(after - before));
  }
  ET_LOG(Info, "Model executed successfully %ld time(s) in %f ms.", num_executions, ticks_to_ms(total));
  return 0;
}
