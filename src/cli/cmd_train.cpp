// softlab train CONFIG [--set KEY=VALUE]... [--out DIR] [--resume] [--threads N]
#include <algorithm>
#include <csignal>
#include <iostream>

#include "cli/options.hpp"

#include "cli/commands.hpp"
#include "softlab/softlab.hpp"
#include "softlab/train.hpp"

namespace softlab::cli {

namespace {
extern "C" void on_signal(int) { request_stop(); }

// The command that continues this run: the same arguments with --out pointing at the run
// directory and --resume, quoted for a POSIX shell.
std::string shell_quote(const std::string& a) {
  if (!a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,/=:@+%") ==
                        std::string::npos)
    return a;
  std::string q = "'";
  for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string resume_command(int argc, char** argv, const std::string& run_dir) {
  // Under mpirun: the same launch (any number of ranks that divides the batch would do).
  std::string cmd = dist::active() ? "mpirun -np " + std::to_string(dist::size()) + " softlab train" : "softlab train";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--resume" || a == "--overwrite") continue;
    if (a == "--out") {
      ++i;
      continue;
    }
    if (a.rfind("--out=", 0) == 0) continue;
    cmd += " " + shell_quote(a);
  }
  return cmd + " --out " + shell_quote(run_dir) + " --resume";
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C ends the process at once (checkpoints are atomic)
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // mpirun forwards SIGUSR1 and SIGUSR2 to every rank (and kills the job a moment after a
  // SIGTERM or SIGINT): `kill -USR1 <mpirun>` stops a data-parallel run cleanly.
  if (dist::active()) {
    sigaction(SIGUSR1, &sa, nullptr);
    sigaction(SIGUSR2, &sa, nullptr);
  }
}
}  // namespace

int cmd_train(int argc, char** argv) {
  cxxopts::Options opts("softlab train", "Train a model from a JSON config; leaves a run directory");
  add_config_options(opts);
  opts.add_options()("out", "run directory (default: output.dir of the config)", cxxopts::value<std::string>())(
      "resume", "continue the run in the run directory from last.ckpt (from the start if it has none yet)")(
      "overwrite", "replace the run already in the run directory (deletes its checkpoints and metrics)")(
      "threads", "threads (overrides train.threads; 0 = physical cores)", cxxopts::value<int>())(
      "overfit-batch", "train and evaluate on the first batch only (debugging)")(
      "progress", "progress output: auto, live or plain", cxxopts::value<std::string>()->default_value("auto"))(
      "q,quiet", "no progress output")(
      "log-steps", "append one JSON line per optimiser step (step, loss, grad_norm, lr) to FILE",
      cxxopts::value<std::string>())(
      "bucket-mib", "under mpirun: size of the gradient buckets summed while backward runs (MiB)",
      cxxopts::value<double>()->default_value("2"))(
      "log-all-ranks", "under mpirun: every rank prints its progress, not rank 0 alone")("h,help", "show this help");
  auto r = parse_args(opts, argc, argv);
  if (r.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  std::vector<std::string> extra;
  if (r.count("threads")) extra.push_back("train.threads=" + std::to_string(r["threads"].as<int>()));
  Config cfg = config_from_args(r, "train", extra);
  TrainOptions to;
  if (r.count("out")) to.out_dir = r["out"].as<std::string>();
  to.resume = r.count("resume") > 0;
  to.overwrite = r.count("overwrite") > 0;
  SOFTLAB_CHECK(!(to.resume && to.overwrite), "--resume and --overwrite: pass one of them");
  to.resume_command = resume_command(argc, argv, to.out_dir.empty() ? cfg.output.dir : to.out_dir);
  to.quiet = r.count("quiet") > 0;
  to.overfit_batch = r.count("overfit-batch") > 0;
  const std::string prog = r["progress"].as<std::string>();
  SOFTLAB_CHECK(prog == "auto" || prog == "live" || prog == "plain", "--progress: expected auto, live or plain, got '",
                prog, "'");
  to.progress = prog == "auto" ? -1 : prog == "live" ? 1 : 0;
  if (r.count("log-steps")) to.step_log = r["log-steps"].as<std::string>();
  const double mib = r["bucket-mib"].as<double>();
  SOFTLAB_CHECK(mib > 0.0 && mib <= 1024.0, "--bucket-mib: expected a size in (0, 1024] MiB, got ", mib);
  to.bucket_bytes = std::max<int64_t>(4, static_cast<int64_t>(mib * 1048576.0));
  to.log_all_ranks = r.count("log-all-ranks") > 0;
  to.openmp_wait = openmp_wait_description();
  to.other_load_cores = openmp_probe_other_load();
  install_stop_handlers();
  TrainResult res = train(cfg, to);
  if (res.status == TrainStatus::Interrupted) return kExitInterrupted;
  if (res.status == TrainStatus::Diverged) {
    if (dist::is_root()) std::cerr << "softlab: " << res.summary["message"].get<std::string>() << "\n";
    return kExitDiverged;
  }
  if (dist::is_root())
    std::cout << "test_accuracy " << res.summary["test_accuracy"].get<double>() << "\n"
              << "run_dir " << res.run_dir << "\n";
  return 0;
}

}  // namespace softlab::cli
