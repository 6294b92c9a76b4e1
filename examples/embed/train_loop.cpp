// A training loop of one's own on softlab's public step API (softlab/train_state.hpp): it
// trains a config as `softlab train` does, printing what a custom loop would, and, given that
// command's run directory for the same config, checks that the weights, optimiser state and
// weight EMA it ends with are the same bit for bit.
//
//   embed_train_loop CONFIG [RUN_DIR]
//
// docs/embedding.md walks through it.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <softlab/softlab.hpp>

namespace {

// The first tensor (weights "model.*", optimiser "optim.*", EMA "ema.*") in which two
// checkpoints differ, empty if none.
std::string first_difference(const softlab::Checkpoint& a, const softlab::Checkpoint& b) {
  if (a.tensors.size() != b.tensors.size()) return "the number of tensors";
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& [name, x] = a.tensors[i];
    const softlab::Tensor& y = b.tensors[i].second;
    if (name != b.tensors[i].first || x.shape() != y.shape() ||
        std::memcmp(x.data(), y.data(), sizeof(float) * static_cast<size_t>(x.numel())) != 0)
      return name;
  }
  return {};
}

int run(const std::string& config_path, const std::string& run_dir) {
  using namespace softlab;
  const Config cfg = load_config(config_path);
  // What softlab train sets for the run: its threads and the precision of its products.
  set_num_threads(cfg.train.threads);
  const PrecisionGuard precision(cfg.train.precision);

  const TrainingData td = load_training_data(cfg);
  TrainState st(cfg, td.data, td.norm);
  BatchLoader loader(td.data.train, train_loader_options(cfg, td.norm, td.data.train.num_classes));
  std::printf("%s: %lld parameters, %lld steps (%lld per epoch, %lld batches each)\n", cfg.name.c_str(),
              static_cast<long long>(st.model->num_parameters()), static_cast<long long>(st.plan.total_steps),
              static_cast<long long>(st.plan.steps_per_epoch), static_cast<long long>(st.plan.accumulate));

  std::vector<Batch> micro;
  while (st.pos.epoch < st.plan.epochs && st.pos.step < st.plan.total_steps) {
    loader.start_epoch(st.pos.epoch, st.pos.batch);
    double clipped = 0.0;
    while (st.pos.batch < st.plan.batches_per_epoch && st.pos.step < st.plan.total_steps) {
      // An optimiser step takes plan.accumulate loader batches, fewer at the end of an epoch.
      const int64_t n = std::min(st.plan.accumulate, st.plan.batches_per_epoch - st.pos.batch);
      micro.assign(static_cast<size_t>(n), Batch{});
      for (Batch& b : micro)
        if (!loader.next(b)) throw Error("the loader ran out of batches before the plan did");
      const StepResult r = st.step(micro);
      if (!r.finite) {
        std::fprintf(stderr, "step %lld: loss %g, gradient norm %g\n", static_cast<long long>(st.pos.step + 1), r.loss,
                     r.grad_norm);
        return 1;
      }
      clipped += r.clip_scale < 1.0;
    }
    const double seen = static_cast<double>(std::max<int64_t>(st.pos.seen, 1));
    const EvalResult test = st.evaluate(td.data.test);
    std::printf("epoch %lld  lr %.2e  train loss %.4f  clipped steps %.0f  test acc %.2f%%",
                static_cast<long long>(st.pos.epoch + 1), st.lr_at(st.pos.step - 1), st.pos.loss_sum / seen, clipped,
                100.0 * test.accuracy);
    if (st.ema) std::printf("  ema acc %.2f%%", 100.0 * st.evaluate(td.data.test, /*averaged=*/true).accuracy);
    std::printf("\n");
    st.next_epoch();
  }
  if (run_dir.empty()) return 0;

  const std::string last = run_dir + "/last.ckpt";
  const std::string diff = first_difference(load_checkpoint(last), st.checkpoint());
  const RunPosition theirs = TrainState::load(last).pos;
  if (!diff.empty() || theirs.step != st.pos.step) {
    std::printf("differs from %s at %s (steps %lld and %lld)\n", last.c_str(), diff.empty() ? "the step" : diff.c_str(),
                static_cast<long long>(theirs.step), static_cast<long long>(st.pos.step));
    return 1;
  }
  std::printf("the same as softlab train's %s, bit for bit (%lld steps)\n", last.c_str(),
              static_cast<long long>(st.pos.step));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s CONFIG [RUN_DIR of softlab train CONFIG]\n", argv[0]);
    return 2;
  }
  try {
    return run(argv[1], argc == 3 ? argv[2] : "");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
