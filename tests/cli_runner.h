// Runs the built `qlora` executable for CLI tests and captures its output and exit code.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "test_paths.h"

namespace qlora::test {

struct RunResult {
  int exit_code;
  std::string out;  // stdout, plus stderr when merged
};

// `PREFIX qlora ARGS`, PREFIX a command such as "env -u VAR" (the environment of that one run) or
// empty; stderr goes into `out` when merge_stderr, else is discarded.
inline RunResult run_cli_env(const std::string& prefix, const std::string& args, bool merge_stderr = true) {
  const std::string cmd = prefix + " " + binary_path("qlora") + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = popen(cmd.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << cmd;
  if (!pipe) return {-1, ""};
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WEXITSTATUS(status), out};
}

// `qlora ARGS` in the test's own environment.
inline RunResult run_cli(const std::string& args, bool merge_stderr = true) { return run_cli_env("", args, merge_stderr); }

}  // namespace qlora::test
