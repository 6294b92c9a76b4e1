// soft: SOFT, softmax-free attention with a Gaussian kernel and Nystrom landmarks (Lu et al.,
// NeurIPS 2021, arXiv 2110.11945; repository fudan-zvg/SOFT, master branch), docs/attention.md.
//
//   q~ = q / Dh^(1/4)                       (Q = K tied: the k input is ignored, dk = 0)
//   L  = landmarks of the grid tokens of q~  [B, H, m, Dh], m = floor(gh/r) floor(gw/r)
//          conv:    GELU_erf(LayerNorm(Conv2d_r(q~)))  (kernel = stride = r, no bias, one
//                   weight [Dh, Dh, r, r] shared by all heads; LN over Dh, eps 1e-5, affine)
//          avgpool: r x r average pooling (no LN, no GELU, no parameters)
//   K1 = kappa(q~, L)  [N, m]       kappa(a, b) = exp(-||a - b||^2 / 2)
//   K2 = kappa(L, L)   [m, m]
//   W  = (K2 + reg I)^-1            Newton–Schulz (SOFT master) or Cholesky, in double
//   W <- D^-1/2 W D^-1/2            normalization (SOFT++, "Softmax-free Linear Transformers",
//                                   IJCV 2024, arXiv 2207.03341): D = diag(rowsum K2)
//   O  = K1 (W (K1^T V))
//
// Tokens [prefix, prefix + gh·gw) of the context are the image grid, row-major; only they
// make landmarks. The prefix tokens (the class token) are queries (rows of K1) and keys
// (they contribute to K1^T V). The landmark grid is floor(g/r) per side, like PyTorch's
// conv and average pooling: rows and columns of the grid beyond a multiple of r are not
// pooled (they are still queries and keys).
//
// Bidirectional only, and there is no "causal" key: a landmark pools an r x r window of the
// grid, so every output depends on landmarks built from tokens anywhere in the image,
// including later ones; no masking of K1 can remove that (landmark pooling over the
// image grid is incompatible with causality). The schema rejects "causal" as an
// unknown key.
//
// Two fused ops carry the module, each with a hand-written backward: gaussian_kernel
// (gaussian_kernel.hpp) and spd_inverse (spd_inverse.hpp). The landmark path is composed
// from primitive ops (slice, reshape, permute, linear, mean, layer_norm, gelu), so autograd
// differentiates it; the products are matmuls. Nothing N x N is ever formed: the largest
// tensors are K1 [B, H, N, m] and the landmark windows [B, H, m, r·r·Dh] (= q's size).
#include <cmath>
#include <memory>

#include "attention/gaussian_kernel.hpp"
#include "attention/kernels.hpp"
#include "attention/soft_reference.hpp"
#include "attention/spd_inverse.hpp"
#include "softlab/attention.hpp"
#include "softlab/nn/layers.hpp"
#include "softlab/ops.hpp"

namespace softlab {

namespace {

class SoftAttention final : public Attention {
 public:
  SoftAttention(const json& p, const AttentionContext& ctx)
      : ratio_(p["ratio"].get<int64_t>()),
        gh_(ctx.grid_h),
        gw_(ctx.grid_w),
        prefix_(ctx.prefix_tokens),
        dh_(ctx.head_dim),
        conv_(p["landmark"].get<std::string>() == "conv"),
        normalize_(p["normalization"].get<bool>()) {
    SOFTLAB_CHECK(gh_ > 0 && gw_ > 0,
                  "soft attention needs an image grid (the attention context has grid ", gh_, "x", gw_,
                  "): its landmarks pool the patch tokens over the grid, so it works in vision "
                  "transformers only, not on plain token sequences");
    SOFTLAB_CHECK(prefix_ >= 0, "soft attention: negative prefix_tokens ", prefix_, " in the attention context");
    SOFTLAB_CHECK(ratio_ <= gh_ && ratio_ <= gw_, "soft attention: ratio ", ratio_, " is larger than the ", gh_, "x",
                  gw_, " image grid (landmarks are floor(grid/ratio) per side, so there would be none); use a ratio "
                  "of at most ", std::min(gh_, gw_));
    SOFTLAB_CHECK(dh_ > 0, "soft attention: the attention context has head_dim ", dh_);
    inv_.method = p["inverse"].get<std::string>() == "cholesky" ? SpdInverseMethod::Cholesky : SpdInverseMethod::Newton;
    inv_.newton_iters = p["newton_iters"].get<int64_t>();
    inv_.reg = p["reg"].get<double>();
    if (conv_) {
      SOFTLAB_CHECK(ctx.init != nullptr, "soft attention: conv landmarks need the initialisation generator");
      // PyTorch's Conv2d default, kaiming_uniform(a = sqrt 5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
      // fan_in = Dh·r·r. Layout [out, in, r, r] as PyTorch's.
      const float bound = 1.0f / std::sqrt(static_cast<float>(dh_ * ratio_ * ratio_));
      weight_ = register_parameter("landmark_weight", uniform({dh_, dh_, ratio_, ratio_}, *ctx.init, -bound, bound));
      norm_ = register_module("landmark_norm", std::make_unique<nn::LayerNorm>(dh_, 1e-5f));
    }
  }

  Tensor forward(const Tensor& q, const Tensor& k, const Tensor& v) override {
    const detail::HeadDims dims = detail::check_qkv("soft attention", q, k, v);
    const int64_t N = dims.N, D = dims.Dh;
    SOFTLAB_CHECK(D == dh_, "soft attention: q has head size ", D, " but the module was built for ", dh_);
    SOFTLAB_CHECK(N == prefix_ + gh_ * gw_, "soft attention: ", N, " tokens, but the context describes ", prefix_,
                  " prefix tokens and a ", gh_, "x", gw_, " grid (", prefix_ + gh_ * gw_, " tokens)");
    const Tensor qt = scale(q, static_cast<float>(std::pow(static_cast<double>(D), -0.25)));
    const Tensor L = landmarks(qt);                  // [B, H, m, Dh]
    const Tensor K1 = gaussian_kernel(qt, L);        // [B, H, N, m]
    const Tensor K2 = gaussian_kernel(L, L);         // [B, H, m, m]
    Tensor W = spd_inverse(K2, inv_);
    if (normalize_) {
      // W_kl / sqrt(d_k d_l) with d = rowsum K2 (no regulariser); autograd carries the
      // gradient through d into K2 as well.
      const int64_t m = K2.shape()[2];
      const Tensor d = sum(K2, -1, true);  // [B, H, m, 1]
      W = div(W, sqrt(mul(d, reshape(d, {q.shape()[0], q.shape()[1], 1, m}))));
    }
    const Tensor T = matmul(K1, v, true, false);     // K1^T V: [B, H, m, Dv]
    return matmul(K1, matmul(W, T));                 // [B, H, N, Dv]
  }

 private:
  // Landmarks from the grid tokens of qt [B, H, N, Dh]: [B, H, m, Dh].
  Tensor landmarks(const Tensor& qt) const {
    const int64_t B = qt.shape()[0], H = qt.shape()[1], D = qt.shape()[3], r = ratio_;
    const int64_t hp = gh_ / r, wp = gw_ / r, m = hp * wp;
    Tensor img = prefix_ > 0 ? slice(qt, 2, prefix_, prefix_ + gh_ * gw_) : qt;
    img = reshape(img, {B * H, gh_, gw_, D});
    if (hp * r != gh_) img = slice(img, 1, 0, hp * r);  // floor(g/r) windows per side
    if (wp * r != gw_) img = slice(img, 2, 0, wp * r);
    const Tensor win = reshape(img, {B * H, hp, r, wp, r, D});  // (window row, dy, window col, dx, c)
    if (!conv_) return reshape(mean(mean(win, 4), 2), {B, H, m, D});
    // Conv with kernel = stride = r: each window flattened (dy, dx, c), times the weight
    // [out, in, dy, dx] reordered to [out, dy, dx, in].
    const Tensor cols = reshape(permute(win, {0, 1, 3, 2, 4, 5}), {B, H, m, r * r * D});
    const Tensor wmat = reshape(permute(weight_, {0, 2, 3, 1}), {D, r * r * D});
    return gelu(norm_->forward(linear(cols, wmat)), GeluKind::Exact);
  }

  int64_t ratio_, gh_, gw_, prefix_, dh_;
  bool conv_, normalize_;
  SpdInverseOptions inv_;
  Tensor weight_;
  nn::LayerNorm* norm_ = nullptr;
};

}  // namespace

AttentionEntry soft_attention_entry() {
  AttentionEntry e;
  e.name = "soft";
  e.help =
      "SOFT, softmax-free Gaussian-kernel attention with landmarks, O = K1 (K2 + reg I)^-1 K1^T V "
      "(Lu et al. 2021); bidirectional only (landmarks pool the image grid), needs an image grid";
  e.caps = {.needs_grid = true, .learnable = true};
  e.schema = {
      {.name = "ratio", .type = ParamType::Int, .default_value = 2, .min = 1.0,
       .help = "landmark ratio r: landmarks pool r x r windows, m = floor(grid_h/r) floor(grid_w/r)"},
      {.name = "landmark", .type = ParamType::String, .default_value = "conv", .choices = {"conv", "avgpool"},
       .help = "conv: Conv2d(kernel = stride = r) + LayerNorm + GELU (the release); avgpool: r x r mean"},
      {.name = "inverse", .type = ParamType::String, .default_value = "newton", .choices = {"newton", "cholesky"},
       .help = "(K2 + reg I)^-1 by the release's Newton-Schulz iteration, or exactly by Cholesky (double)"},
      {.name = "newton_iters", .type = ParamType::Int, .default_value = 20, .min = 1.0, .max = 1000.0,
       .help = "Newton-Schulz iterations (inverse = newton)"},
      {.name = "reg", .type = ParamType::Float, .default_value = 0.01, .min = 0.0,
       .help = "regulariser added to the landmark kernel's diagonal before inverting"},
      {.name = "normalization", .type = ParamType::Bool, .default_value = false,
       .help = "SOFT++: W <- D^-1/2 W D^-1/2 with D the row sums of the landmark kernel (Lu et al. 2024)"},
  };
  e.factory = [](const json& p, const AttentionContext& ctx) -> std::unique_ptr<Attention> {
    return std::make_unique<SoftAttention>(p, ctx);
  };
  e.reference = attention_ref::soft_reference;
  e.golden = {
      "soft_avgpool_cholesky_cls_n17",
      "soft_avgpool_newton_n16",
      "soft_conv_cholesky_n16",
      "soft_conv_newton_cls_grid5x6",
      "soft_conv_newton_cls_n17",
      "soft_avgpool_cholesky_norm_n16",
      "soft_conv_newton_norm_cls_n17",
  };
  return e;
}

}  // namespace softlab
