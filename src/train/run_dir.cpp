// The run directory's crash safety (train/run_dir.hpp).
#include "train/run_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "softlab/error.hpp"

namespace softlab::detail {

namespace fs = std::filesystem;

RunDirLock::RunDirLock(const fs::path& dir) {
  const std::string p = (dir / ".lock").string();
  fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  SOFTLAB_CHECK(fd_ >= 0, "cannot create the lock file ", p, ": ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    SOFTLAB_CHECK(e != EWOULDBLOCK, "run directory ", dir.string(), " is in use by another softlab process",
                  n > 0 ? " (pid " + std::string(buf, static_cast<size_t>(n)) + ")" : std::string(),
                  "; wait for it to end, or train into another --out DIR");
    throw Error(cat("cannot lock ", p, ": ", std::strerror(e)));
  }
  // The holder's pid, for the message above; the lock itself is what counts.
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // Only the message loses the pid.
  }
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing drops the lock; the file stays (it holds nothing)
}

int remove_stale_temporaries(const fs::path& dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp.") == std::string::npos || !e.is_regular_file(ec)) continue;
    if (fs::remove(e.path(), ec)) ++removed;
  }
  return removed;
}

int64_t file_size_or_zero(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

int64_t drop_uncommitted_metrics(const fs::path& metrics, int64_t committed) {
  const int64_t size = file_size_or_zero(metrics);
  if (committed < 0 || size <= committed) return 0;
  int64_t lines = 0;
  {
    std::ifstream in(metrics, std::ios::binary);
    in.seekg(committed);
    const std::string tail{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    for (char c : tail) lines += c == '\n';
    if (!tail.empty() && tail.back() != '\n') ++lines;  // a torn line
  }
  std::error_code ec;
  fs::resize_file(metrics, static_cast<uintmax_t>(committed), ec);
  SOFTLAB_CHECK(!ec, "cannot cut ", metrics.string(), " back to the ", committed,
                " bytes its checkpoint committed: ", ec.message());
  return lines;
}

fs::path pending_best_path(const fs::path& dir, int64_t step) {
  return dir / ("best.ckpt.pending-" + std::to_string(step));
}

void commit_pending_best(const fs::path& dir, int64_t step) {
  std::error_code ec;
  fs::rename(pending_best_path(dir, step), dir / "best.ckpt", ec);
  SOFTLAB_CHECK(!ec, "cannot rename ", pending_best_path(dir, step).string(), " to best.ckpt: ", ec.message());
}

std::string recover_pending_best(const fs::path& dir, int64_t best_step) {
  std::string said;
  std::error_code ec;
  std::vector<fs::path> pending;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename().string().rfind("best.ckpt.pending-", 0) == 0) pending.push_back(e.path());
  for (const fs::path& p : pending) {
    if (best_step >= 0 && p == pending_best_path(dir, best_step)) {
      commit_pending_best(dir, best_step);
      said += cat(said.empty() ? "" : "; ", "completed the save of best.ckpt (step ", best_step, ")");
    } else {
      fs::remove(p, ec);
      said += cat(said.empty() ? "" : "; ", "removed ", p.filename().string(), ", which last.ckpt never recorded");
    }
  }
  return said;
}

void crash_point(const char* name) {
  const char* at = std::getenv("SOFTLAB_CRASH_AT");
  if (at && std::strcmp(at, name) == 0) std::raise(SIGKILL);
}

}  // namespace softlab::detail
