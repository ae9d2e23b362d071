// `qlora system [--json]`: what this machine gives the CPU backend (the ISA detected and in use,
// who runs the bf16 products, oneDNN, threads, the OpenMP wait policy), so a user can see which
// kernels will run and why a run is as fast as it is.
#include <fmt/core.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_isa.h"
#include "backend/cpu/gemm_bf16.h"
#include "backend/cpu/onednn_gemm.h"
#include "backend/cpu/threads.h"
#include "commands.h"

namespace qlora::cli {

void register_system(CLI::App& app) {
  auto json_out = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("system", "Show the CPU features and kernels this machine uses");
  cmd->add_flag("--json", *json_out, "print a JSON object");
  cmd->callback([json_out] {
    const cpu::CpuIsa detected = cpu::detected_isa(), active = cpu::active_isa();
    const bool native = cpu::has_bf16_kernel(active);
    const char* engine = !native ? "f32 fallback (bf16-rounded operands through sgemm)"
                         : cpu::gemm_engine(active) == cpu::GemmEngine::OneDnn ? "oneDNN"
                                                                                : "own micro-kernels";
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    nlohmann::json j = {{"isa_detected", cpu::isa_name(detected)},
                        {"isa_active", cpu::isa_name(active)},
                        {"native_bf16", native},
                        {"bf16_products", engine},
                        {"onednn_built", cpu::onednn_built()},
                        {"threads", num_threads()},
                        {"omp_wait_policy", policy ? policy : ""}};
    if (*json_out) {
      fmt::print("{}\n", j.dump(2));
      return;
    }
    fmt::print("cpu isa          {} (detected {}; QLORA_CPU_ISA caps it)\n", cpu::isa_name(active),
               cpu::isa_name(detected));
    fmt::print("bf16 products    {}{}\n", engine, native ? "" : "; compute_dtype auto picks f32");
    fmt::print("oneDNN           {}\n", cpu::onednn_built() ? "built in (QLORA_CPU_GEMM=onednn)" : "not built in");
    fmt::print("threads          {}\n", num_threads());
    fmt::print("OMP_WAIT_POLICY  {}\n", policy ? policy : "(unset)");
  });
}

}  // namespace qlora::cli
