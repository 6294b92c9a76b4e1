// Parameter groups (train.optimizer.groups): which parameters a pattern selects, that the
// first matching group wins, the errors for groups that get nothing, and what AdamW and SGD
// do with a group's learning-rate scale and weight decay (against hand-computed steps).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "softlab/error.hpp"
#include "softlab/ops.hpp"
#include "softlab/optim.hpp"
#include "expect_error.hpp"

using namespace softlab;

namespace {
using test::expect_bad_input;

// Parameters named as a model's are, each a one-element tensor holding 1 that takes a gradient.
std::vector<nn::Parameter> params(std::initializer_list<std::pair<const char*, bool>> names) {
  std::vector<nn::Parameter> out;
  for (const auto& [name, decay] : names) {
    Tensor t = from_vector({1}, {1.0f});
    t.set_requires_grad(true);
    out.push_back({name, t, decay});
  }
  return out;
}

OptimizerConfig with_groups(std::vector<ParamGroup> groups, double lr = 0.1, double weight_decay = 0.05) {
  OptimizerConfig c;
  c.lr = lr;
  c.weight_decay = weight_decay;
  c.groups = std::move(groups);
  return c;
}

// sum_i g_i * p_i: parameter i gets the gradient g_i.
void backward_with(const std::vector<nn::Parameter>& ps, const std::vector<float>& grads) {
  Tensor loss = scalar(0.0f);
  for (size_t i = 0; i < ps.size(); ++i) loss = add(loss, sum(scale(ps[i].tensor, grads[i])));
  loss.backward();
}

}  // namespace

TEST(ParamGroups, PatternsMatchWholeNamesOrTheModulesHoldingThem) {
  struct Case {
    const char* pattern;
    const char* name;
    bool match;
  };
  const Case cases[] = {
      // No wildcard: the parameter itself, or a module holding it (a prefix ending at a dot).
      {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.weight", true},
      {"blocks.0", "blocks.0.attn.qkv.weight", true},
      {"blocks.0.attn", "blocks.0.attn.qkv.weight", true},
      {"blocks.0", "blocks.01.attn.qkv.weight", false},
      {"blocks.0", "blocks.10.attn.qkv.weight", false},
      {"block", "blocks.0.attn.qkv.weight", false},
      {"bias", "blocks.0.attn.qkv.bias", false},  // no implicit suffix match
      {"head", "head.weight", true},
      {"head.weight", "head", false},
      // `*` takes any characters, dots included; `?` exactly one.
      {"*", "cls_token", true},
      {"*.bias", "blocks.0.attn.qkv.bias", true},
      {"*.bias", "head.bias", true},
      {"*.bias", "blocks.0.attn.qkv.weight", false},
      {"*.attn.attn.*", "blocks.3.attn.attn.beta", true},
      {"*.attn.attn.*", "blocks.3.attn.qkv.weight", false},
      {"blocks.*.attn", "blocks.2.attn.proj.bias", true},  // every attention sub-layer, as a module
      {"blocks.1*", "blocks.10.norm1.weight", true},
      {"blocks.1*", "blocks.1.norm1.weight", true},
      {"blocks.?.norm1", "blocks.3.norm1.weight", true},
      {"blocks.?.norm1", "blocks.12.norm1.weight", false},
      {"blocks.??.norm1", "blocks.12.norm1.weight", true},
      {"*norm*", "blocks.0.norm2.bias", true},
      {"*w_?", "blocks.0.attn.attn.w_q", true},
      {"*w_?", "blocks.0.attn.attn.b_q", false},
  };
  for (const Case& c : cases)
    EXPECT_EQ(group_pattern_matches(c.pattern, c.name), c.match) << "'" << c.pattern << "' on '" << c.name << "'";
  // Many stars against a long name that almost matches: no exponential backtracking.
  const std::string name(2000, 'a');
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(group_pattern_matches("*a*a*a*a*a*a*a*a*a*a*a*a*b", name));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
}

TEST(ParamGroups, FirstMatchingGroupWinsAndDecayStaysTheModels) {
  const auto ps = params({{"blocks.0.fc.weight", true}, {"blocks.0.fc.bias", false}, {"blocks.1.fc.weight", true},
                          {"blocks.1.fc.bias", false}, {"head.scale", false}});
  // blocks.0.fc.weight matches both groups: the first takes it.
  const OptimizerConfig c = with_groups({{.match = "blocks.0", .lr_scale = 0.5},
                                         {.match = "*.weight", .weight_decay = 0.1}});
  const auto s = param_settings(c, ps);
  ASSERT_EQ(s.size(), 5u);
  const int group[] = {0, 0, 1, -1, -1};
  const double lr_scale[] = {0.5, 0.5, 1.0, 1.0, 1.0};
  // A group's weight_decay (or the default) applies to the parameters that decay; biases and
  // other no-decay parameters get none in any group.
  const double weight_decay[] = {0.05, 0.0, 0.1, 0.0, 0.0};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(s[i].group, group[i]) << ps[i].name;
    EXPECT_EQ(s[i].lr_scale, lr_scale[i]) << ps[i].name;
    EXPECT_EQ(s[i].weight_decay, weight_decay[i]) << ps[i].name;
  }
  // No groups: every parameter has the defaults.
  for (const auto& d : param_settings(with_groups({}), ps)) {
    EXPECT_EQ(d.group, -1);
    EXPECT_EQ(d.lr_scale, 1.0);
  }
}

TEST(ParamGroups, LrIsAScaleOfTheOptimizersLr) {
  const auto ps = params({{"a.w", true}, {"b.w", true}, {"c.w", true}});
  const auto s = param_settings(
      with_groups({{.match = "a", .lr = 0.5}, {.match = "b", .lr_scale = 3.0}, {.match = "c", .weight_decay = 0.0}},
                  0.2),
      ps);
  EXPECT_DOUBLE_EQ(s[0].lr_scale, 2.5);  // 0.5 / 0.2
  EXPECT_DOUBLE_EQ(s[1].lr_scale, 3.0);
  EXPECT_DOUBLE_EQ(s[2].lr_scale, 1.0);  // a group that sets only weight_decay keeps the lr
  EXPECT_EQ(s[2].weight_decay, 0.0);
}

TEST(ParamGroups, GroupsThatGetNoParameterAreErrorsNamingThem) {
  const auto ps = params({{"cls_token", false}, {"blocks.0.attn.qkv.weight", true}, {"blocks.0.attn.qkv.bias", false},
                          {"blocks.1.attn.qkv.weight", true}, {"head.weight", true}});
  expect_bad_input([&] { param_settings(with_groups({{.match = "head", .lr = 1}, {.match = "blocks.9", .lr = 1}}), ps); },
               {"train.optimizer.groups[1].match: 'blocks.9' selects no parameter of this model",
                "blocks.0.attn.qkv.weight", "blocks.1.attn.qkv.weight"});
  expect_bad_input([&] { param_settings(with_groups({{.match = "*.attn.attn.*", .lr = 1}}), ps); },
               {"train.optimizer.groups[0].match: '*.attn.attn.*' selects no parameter", "cls_token"});
  // Every parameter of the second group was taken by the first.
  const OptimizerConfig shadowed = with_groups({{.match = "*", .lr_scale = 2}, {.match = "head", .lr_scale = 0}});
  expect_bad_input([&] { param_settings(shadowed, ps); },
               {"train.optimizer.groups[1].match: 'head' selects 1 parameter, but train.optimizer.groups[0] took it",
                "put the narrower group first"});
  // make_optimizer checks the same.
  expect_bad_input([&] { make_optimizer(with_groups({{.match = "blocks.9", .lr = 1}}), ps); },
               {"train.optimizer.groups[0].match"});
}

// lr_scale 0 freezes a group: its parameters keep their values while the others move, with
// AdamW and with SGD.
TEST(ParamGroups, ZeroLrScaleFreezesItsParameters) {
  for (const char* type : {"adamw", "sgd"}) {
    SCOPED_TRACE(type);
    const auto ps = params({{"blocks.0.w", true}, {"blocks.0.b", false}, {"blocks.1.w", true}, {"head.b", false}});
    OptimizerConfig c = with_groups({{.match = "blocks.0", .lr_scale = 0.0}});
    c.type = type;
    auto opt = make_optimizer(c, ps);
    for (int t = 0; t < 3; ++t) {
      backward_with(ps, {0.5f, -0.25f, 0.5f, -0.25f});
      opt->step(0.1);
      opt->zero_grad();
    }
    EXPECT_EQ(ps[0].tensor.item(), 1.0f);  // no update and no decay
    EXPECT_EQ(ps[1].tensor.item(), 1.0f);
    EXPECT_LT(ps[2].tensor.item(), 0.9f);
    EXPECT_GT(ps[3].tensor.item(), 1.1f);
    // The state stays one entry per parameter, as in checkpoints written without groups.
    std::vector<std::string> names;
    for (const auto& [n, t] : opt->state()) names.push_back(n);
    EXPECT_EQ(names.size(), type == std::string("adamw") ? 9u : 5u);
  }
}

// One AdamW step from p = 1 with gradient 0.5 (so m̂ = 0.5, v̂ = 0.25 and the Adam direction
// is 0.5 / (0.5 + 1e-8) ~ 1) at lr 0.1: p' = p (1 - lr_p wd_p) - lr_p.
TEST(ParamGroups, GroupWeightDecayAndLrScaleInOneAdamWStep) {
  const auto ps = params({{"a.w", true}, {"a.b", false}, {"b.w", true}, {"c.w", true}});
  const OptimizerConfig c = with_groups(
      {{.match = "a", .weight_decay = 0.5}, {.match = "b", .lr_scale = 2.0, .weight_decay = 0.5}}, 0.1, 0.01);
  auto opt = make_optimizer(c, ps);
  backward_with(ps, {0.5f, 0.5f, 0.5f, 0.5f});
  opt->step(0.1);
  // The update runs in float32 (its bias corrections too): 1e-5, against differences of 1e-3.
  const double adam = 0.5 / (0.5 + 1e-8);
  EXPECT_NEAR(ps[0].tensor.item(), 1.0 * (1 - 0.1 * 0.5) - 0.1 * adam, 1e-5);   // the group's decay: 0.85
  EXPECT_NEAR(ps[1].tensor.item(), 1.0 - 0.1 * adam, 1e-5);                     // never decays: 0.9
  EXPECT_NEAR(ps[2].tensor.item(), 1.0 * (1 - 0.2 * 0.5) - 0.2 * adam, 1e-5);   // lr 0.2 decays too: 0.7
  EXPECT_NEAR(ps[3].tensor.item(), 1.0 * (1 - 0.1 * 0.01) - 0.1 * adam, 1e-5);  // the defaults: 0.899
}

// torch.optim.SGD's step with the group's rate and decay: d = g + wd p, p' = p - lr_p d.
TEST(ParamGroups, GroupWeightDecayAndLrScaleInOneSgdStep) {
  const auto ps = params({{"a.w", true}, {"b.w", true}});
  OptimizerConfig c = with_groups({{.match = "a", .lr_scale = 3.0, .weight_decay = 0.1}}, 0.05, 0.0);
  c.type = "sgd";
  auto opt = make_optimizer(c, ps);
  backward_with(ps, {2.0f, 2.0f});
  opt->step(0.05);
  EXPECT_NEAR(ps[0].tensor.item(), 1.0 - 0.15 * (2.0 + 0.1), 1e-6);  // 0.685
  EXPECT_NEAR(ps[1].tensor.item(), 1.0 - 0.05 * 2.0, 1e-6);
}

// lr = x is lr_scale = x / train.optimizer.lr: the same weights, bit for bit, over several
// steps of a decaying schedule.
TEST(ParamGroups, LrAndTheEquivalentLrScaleTrainAlike) {
  std::vector<std::vector<float>> results;
  for (const ParamGroup& g : {ParamGroup{.match = "a", .lr = 0.004}, ParamGroup{.match = "a", .lr_scale = 4.0}}) {
    const auto ps = params({{"a.w", true}, {"b.w", true}});
    auto opt = make_optimizer(with_groups({g}, 0.001), ps);
    ScheduleConfig sched;
    sched.warmup_epochs = 1;
    for (int t = 0; t < 6; ++t) {
      backward_with(ps, {0.3f * static_cast<float>(t + 1), -0.2f});
      opt->step(schedule_lr(sched, 0.001, t, 2, 6));
      opt->zero_grad();
    }
    results.push_back({ps[0].tensor.item(), ps[1].tensor.item()});
  }
  EXPECT_EQ(results[0], results[1]);
  EXPECT_NE(results[0][0], 1.0f);
}
