#pragma once
// Training progress output: a live line (carriage returns) on a terminal, plain periodic
// lines when output is redirected, nothing with --quiet.
#include <chrono>
#include <cstdint>
#include <string>

namespace softlab::detail {

class Progress {
 public:
  // mode: -1 auto (terminal: live), 0 plain lines, 1 live line; quiet: no output at all
  Progress(int mode, bool quiet);
  void step(int64_t epoch, int64_t epochs, int64_t batch, int64_t batches, double loss, double acc,
            double images_per_sec, double eta_seconds);
  void end_epoch();  // finishes a live line
  void line(const std::string& text);  // a log line (printed even in live mode, not when quiet)

 private:
  bool live_, quiet_, dirty_ = false;
  std::chrono::steady_clock::time_point last_;
  double plain_interval_ = 10.0;  // seconds between plain lines
};

std::string format_duration(double seconds);

}  // namespace softlab::detail
