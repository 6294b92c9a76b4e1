// softlab sweep under mpirun: rank 0 hands out the runs, every rank runs them
// (cli/sweep_dispatch.hpp).
#include "cli/sweep_dispatch.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <thread>

#include "cli/sweep_runs.hpp"
#include "softlab/distributed.hpp"
#include "softlab/error.hpp"

namespace softlab::cli::sweep {

namespace {
using Clock = std::chrono::steady_clock;

// One tag per direction: MPI keeps the messages of one sender and tag in order, so a run's
// report always reaches rank 0 before its sender's "leaving".
constexpr int kTagToRoot = 7301;
constexpr int kTagToWorker = 7302;
// Worker -> rank 0: these, or a finished run's report (>= 0, see report()).
constexpr int64_t kAsk = -1, kInterrupted = -2, kLeaving = -3, kAlive = -4;
// Rank 0 -> worker: a run index (>= 0), these, or kFinal - exit code.
constexpr int64_t kNoMore = -1, kStop = -2, kFinal = -1000;

int64_t report(size_t index, Outcome o, int code) {
  return static_cast<int64_t>(index) << 16 | static_cast<int64_t>(o) << 8 | (code & 0xff);
}

// Heartbeats go out several times per timeout, so silence for a whole timeout means trouble.
double heartbeat_seconds() { return std::min(30.0, dist::timeout() / 4.0); }
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
void nap() { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }

void say(int rank, const std::string& text) { std::cout << "rank " << rank << ": " << text << "\n" << std::flush; }
}  // namespace

void check_same_runs(const Sweep& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a: the same on every machine, unlike std::hash
  auto mix = [&h](const std::string& x) {
    for (unsigned char c : x + '\0') h = (h ^ c) * 1099511628211ull;
  };
  mix(s.base);
  for (const SweepRun& r : s.runs) {
    mix(r.dir);
    for (const auto& o : r.overrides) mix(o);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  const std::string mine = std::to_string(s.runs.size()) + " runs, fingerprint " + hex;
  const char* what = "comparing the sweep's runs across ranks";
  dist::agree(what, [&] {
    const std::vector<std::string> all = dist::allgather(mine, what);
    for (size_t r = 1; r < all.size(); ++r)
      SOFTLAB_CHECK(all[r] == all[0], s.file, ": rank ", r, " computed other runs (", all[r], ") than rank 0 (",
                    all[0], "): every rank must read the same sweep file and base config with the same --out; "
                    "does its working directory or a file differ on its machine?");
  });
}

DispatchResult dispatch(const std::string& self, const Sweep& s, const std::vector<size_t>& todo, int jobs,
                        int threads) {
  const int ranks = dist::size();
  DispatchResult res;
  std::map<pid_t, size_t> running;
  size_t next = 0, started = 0, finished = 0;
  std::vector<bool> left(static_cast<size_t>(ranks), false);
  left[0] = true;
  std::vector<Clock::time_point> heard(static_cast<size_t>(ranks), Clock::now());
  auto beat = Clock::now();
  bool stop = false, forwarded = false;
  const std::string of = "/" + std::to_string(todo.size()) + "] ";

  // The next run for `rank`, announced; or why there is none.
  auto hand_out = [&](int rank) -> int64_t {
    if (stop || next >= todo.size()) return stop ? kStop : kNoMore;
    const size_t i = todo[next++];
    say(rank, "[" + std::to_string(++started) + of + "start  " + describe(s.runs[i]));
    return static_cast<int64_t>(i);
  };
  auto finish = [&](int rank, size_t i, Outcome o, int code) {
    if (o == Outcome::Failed) ++res.failed;
    say(rank, "[" + std::to_string(++finished) + of + outcome_text(s.runs[i], o, code));
  };
  auto stop_handing_out = [&](int rank) {
    if (!stop) say(rank, "interrupted: no more runs are handed out; the sweep resumes next time");
    stop = res.interrupted = true;
  };

  for (;;) {
    if (g_interrupted) stop_handing_out(0);
    if (g_interrupted && !forwarded) {
      interrupt_all(running);
      forwarded = true;
    }
    while (!stop && next < todo.size() && static_cast<int>(running.size()) < jobs) {
      const size_t i = static_cast<size_t>(hand_out(0));
      running[start_run(self, s, s.runs[i], threads, 0)] = i;
    }
    reap(s, running, [&](size_t i, Outcome o, int code) { finish(0, i, o, code); });
    int from = 0;
    int64_t v = 0;
    while (dist::poll(kTagToRoot, &from, &v)) {
      heard[static_cast<size_t>(from)] = Clock::now();
      if (v == kAsk) {
        dist::send(from, kTagToWorker, hand_out(from));
      } else if (v == kInterrupted) {
        stop_handing_out(from);
      } else if (v == kLeaving) {
        left[static_cast<size_t>(from)] = true;
      } else if (v >= 0) {
        finish(from, static_cast<size_t>(v >> 16), static_cast<Outcome>((v >> 8) & 0xff), static_cast<int>(v & 0xff));
      }
    }
    const bool all_left = std::all_of(left.begin(), left.end(), [](bool b) { return b; });
    if (running.empty() && (stop || next >= todo.size()) && all_left) return res;
    // The ranks that have left wait for the exit code: tell them rank 0 is alive. A rank that
    // still works sends its own heartbeat; silence for a whole timeout ends the job.
    if (since(beat) > heartbeat_seconds()) {
      for (int r = 1; r < ranks; ++r)
        if (left[static_cast<size_t>(r)]) dist::send(r, kTagToWorker, kAlive);
      beat = Clock::now();
    }
    for (int r = 1; r < ranks; ++r) {
      if (left[static_cast<size_t>(r)] || since(heard[static_cast<size_t>(r)]) <= dist::timeout()) continue;
      std::cerr << "softlab: rank 0: sweep: rank " << r << " has not been heard from for " << dist::timeout()
                << " s (SOFTLAB_MPI_TIMEOUT); ending the job. Its runs resume next time." << std::endl;
      dist::abort_job(1);
    }
    nap();
  }
}

void release_workers(int code) {
  for (int r = 1; r < dist::size(); ++r) dist::send(r, kTagToWorker, kFinal - code);
}

int work(const std::string& self, const Sweep& s, int jobs, int threads) {
  const int me = dist::rank();
  std::map<pid_t, size_t> running;
  bool more = true, reported = false;
  auto beat = Clock::now();
  for (;;) {
    if (g_interrupted && !reported) {
      dist::send(0, kTagToRoot, kInterrupted);
      interrupt_all(running);
      reported = true;
      more = false;
    }
    while (more && static_cast<int>(running.size()) < jobs) {
      dist::send(0, kTagToRoot, kAsk);
      const int64_t v = dist::receive(0, kTagToWorker, "rank 0's answer to a request for a run");
      if (v < 0) {
        more = false;
        break;
      }
      SOFTLAB_ASSERT(static_cast<size_t>(v) < s.runs.size(), "sweep: rank 0 handed out run ", v, " of ",
                     s.runs.size());
      running[start_run(self, s, s.runs[static_cast<size_t>(v)], threads, me)] = static_cast<size_t>(v);
    }
    reap(s, running, [&](size_t i, Outcome o, int code) { dist::send(0, kTagToRoot, report(i, o, code)); });
    if (!more && running.empty()) break;
    if (since(beat) > heartbeat_seconds()) {
      dist::send(0, kTagToRoot, kAlive);
      beat = Clock::now();
    }
    nap();
  }
  dist::send(0, kTagToRoot, kLeaving);
  // Rank 0 may still train for hours: wait for its exit code, each wait as long as a timeout,
  // renewed by its heartbeats.
  for (;;) {
    const int64_t v = dist::receive(0, kTagToWorker, "the end of the sweep on rank 0", dist::timeout());
    if (v <= kFinal) return static_cast<int>(kFinal - v);
  }
}

}  // namespace softlab::cli::sweep
