#pragma once
// The run directory's crash safety (docs/reliability.md): one training process per
// directory, what a kill can leave behind, and how the next start puts it back in order.
//
// What a kill at any moment can leave, and what the next `train --resume` does with it:
//   - a metrics.jsonl line that no checkpoint committed (the kill came between the append
//     and the save): dropped, since last.ckpt records how many bytes of metrics.jsonl it
//     covers, and resuming trains that epoch again, bit for bit;
//   - a torn last line (the kill came during the append): dropped the same way;
//   - `<file>.tmp.<pid>` from an interrupted atomic write: removed;
//   - `best.ckpt.pending-<step>`: a new best, written before last.ckpt recorded it. Kept as
//     best.ckpt if last.ckpt names that step as its best, removed otherwise.
#include <cstdint>
#include <filesystem>
#include <string>

namespace softlab::detail {

// An advisory lock on DIR/.lock for the life of the object: a second `softlab train` on
// the same directory is refused (bad input, naming the directory and the holder's pid)
// rather than interleaving two runs' checkpoints. The kernel drops it when the process
// dies, however it dies.
class RunDirLock {
 public:
  explicit RunDirLock(const std::filesystem::path& dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int fd_ = -1;
};

// Removes DIR/*.tmp.* left by interrupted atomic writes; returns how many. Only under the
// lock: a live writer's temporary file would otherwise go too.
int remove_stale_temporaries(const std::filesystem::path& dir);

// Cuts metrics.jsonl back to the `committed` bytes that last.ckpt covers; returns the lines
// dropped. A file shorter than that (edited by hand) is left alone; committed < 0 (a
// checkpoint from before this rule) keeps the file as it is.
int64_t drop_uncommitted_metrics(const std::filesystem::path& metrics, int64_t committed);

// The pending best checkpoint of `step`: written before last.ckpt, renamed to best.ckpt
// after it (commit_pending_best).
std::filesystem::path pending_best_path(const std::filesystem::path& dir, int64_t step);
void commit_pending_best(const std::filesystem::path& dir, int64_t step);
// At start: completes the commit of a pending best that last.ckpt records (best_step), and
// removes any other. Returns a line saying what it did, empty when there was nothing.
std::string recover_pending_best(const std::filesystem::path& dir, int64_t best_step);

// The size of a file, 0 if it does not exist.
int64_t file_size_or_zero(const std::filesystem::path& p);

// Test hook: when SOFTLAB_CRASH_AT names this point, the process kills itself with SIGKILL
// there, so the tests can stop a run between any two writes of its commit.
void crash_point(const char* name);

}  // namespace softlab::detail
