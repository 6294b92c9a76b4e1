#pragma once
// One run of softlab sweep: the child process `softlab train` that trains it, and what its
// exit means. Shared by the single-process loop (cmd_sweep.cpp) and the ranks of an MPI job
// (sweep_dispatch.cpp), so a run is started and judged the same way in both.
#include <sys/types.h>

#include <csignal>
#include <functional>
#include <map>
#include <string>

#include "softlab/sweep.hpp"

namespace softlab::cli::sweep {

// Set by SIGINT, SIGTERM or SIGHUP once install_signal_handlers() ran: start no more runs,
// and pass the interruption on to the running ones (interrupt_all()).
extern volatile std::sig_atomic_t g_interrupted;
void install_signal_handlers();

// Starts `softlab train` for `r` in a child process (output in <run dir>/train.log), resuming
// from its last.ckpt when there is one; returns the child's pid. The child always gets
// SOFTLAB_MPI=0: it is one ordinary process, never a rank, even when an MPI launcher's
// variables are in the environment. `rank` >= 0 (under mpirun) records the rank and host in
// <run dir>/sweep_rank.json (results.json's "rank" and "host").
// The child runs in a process group of its own, so that signals reach it only through the
// sweep: a `kill` of the sweep alone would otherwise leave its runs training to the end, a
// terminal's Ctrl-C would reach the children as well as the sweep's forwarded SIGTERM (and
// train ends at once on a second signal), and mpirun signals a rank's whole group and
// SIGKILLs it a second later, which could cut a checkpoint short. The sweep forwards the
// interruption itself (interrupt_all()) and each child saves in its own time.
pid_t start_run(const std::string& self, const Sweep& s, const SweepRun& r, int threads, int rank);

// Asks a running child to stop at its next step and save last.ckpt (SIGTERM).
void interrupt(pid_t child);
// The same for every child in `running` (pid -> index of its run in the sweep).
void interrupt_all(const std::map<pid_t, size_t>& running);

enum class Outcome { Done, Stopped, Failed };
// A finished child's exit status (waitpid's) and its run directory: done (exit 0 and a
// finished summary), stopped (interrupted: resumes next time) or failed. `code` gets the
// exit code (128 + signal for a killed child).
Outcome outcome_of(const SweepRun& r, int status, int* code);

// Collects the children of `running` that have exited, without waiting, and calls
// done(index, outcome, code) for each.
void reap(const Sweep& s, std::map<pid_t, size_t>& running, const std::function<void(size_t, Outcome, int)>& done);

// "cell seed 3".
std::string describe(const SweepRun& r);
// The text after "[k/N] " of a finished run's line: "done   cell seed 3", "stopped ...", "FAILED ...".
std::string outcome_text(const SweepRun& r, Outcome o, int code);

}  // namespace softlab::cli::sweep
