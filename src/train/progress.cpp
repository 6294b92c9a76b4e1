#include "train/progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace softlab::detail {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

Progress::Progress(int mode, bool quiet) : quiet_(quiet) {
  live_ = mode == 1 || (mode < 0 && ::isatty(STDERR_FILENO));
  last_ = std::chrono::steady_clock::now() - std::chrono::hours(1);
}

void Progress::step(int64_t epoch, int64_t epochs, int64_t batch, int64_t batches, double loss, double acc,
                    double ips, double eta) {
  if (quiet_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  const bool last_batch = batch == batches;
  if (live_ ? (since < 0.1 && !last_batch) : (since < plain_interval_)) return;
  last_ = now;
  char buf[256];
  std::snprintf(buf, sizeof buf, "epoch %lld/%lld  step %lld/%lld  loss %.4f  acc %.2f%%  %.0f img/s  ETA %s",
                static_cast<long long>(epoch), static_cast<long long>(epochs), static_cast<long long>(batch),
                static_cast<long long>(batches), loss, 100.0 * acc, ips, format_duration(eta).c_str());
  if (live_) {
    std::fprintf(stderr, "\r\033[K%s", buf);
    dirty_ = true;
  } else {
    std::fprintf(stderr, "%s\n", buf);
  }
  std::fflush(stderr);
}

void Progress::end_epoch() {
  if (dirty_) {
    std::fprintf(stderr, "\n");
    dirty_ = false;
  }
}

void Progress::line(const std::string& text) {
  if (quiet_) return;
  end_epoch();
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

}  // namespace softlab::detail
