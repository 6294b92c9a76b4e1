#pragma once
// One run of softlab sweep: the child process `softlab train` that trains it, and what its
// exit means. Shared by the single-process loop (cmd_sweep.cpp) and the ranks of an MPI job
// (sweep_dispatch.cpp), so a run is started and judged the same way in both.
#include <sys/types.h>

#include <csignal>
#include <string>

#include "softlab/sweep.hpp"

namespace softlab::cli::sweep {

// Set by SIGINT/SIGTERM once install_signal_handlers() ran: start no more runs.
extern volatile std::sig_atomic_t g_interrupted;
void install_signal_handlers();

// Starts `softlab train` for `r` in a child process (output in <run dir>/train.log), resuming
// from its last.ckpt when there is one; returns the child's pid. The child always gets
// SOFTLAB_MPI=0: it is one ordinary process, never a rank, even when an MPI launcher's
// variables are in the environment. `rank` >= 0 (under mpirun) records the rank and host in
// <run dir>/sweep_rank.json (results.json's "rank" and "host") and puts the child in a
// process group of its own: mpirun signals a rank's whole group and SIGKILLs it a second
// later, which could cut a checkpoint short, so the rank forwards the interruption itself
// (interrupt()) and the child saves in its own time.
pid_t start_run(const std::string& self, const Sweep& s, const SweepRun& r, int threads, int rank);

// Asks a running child to stop at its next step and save last.ckpt (SIGTERM).
void interrupt(pid_t child);

enum class Outcome { Done, Stopped, Failed };
// A finished child's exit status (waitpid's) and its run directory: done (exit 0 and a
// finished summary), stopped (interrupted: resumes next time) or failed. `code` gets the
// exit code (128 + signal for a killed child).
Outcome outcome_of(const SweepRun& r, int status, int* code);

// "cell seed 3".
std::string describe(const SweepRun& r);
// The text after "[k/N] " of a finished run's line: "done   cell seed 3", "stopped ...", "FAILED ...".
std::string outcome_text(const SweepRun& r, Outcome o, int code);

}  // namespace softlab::cli::sweep
