// mala: magnitude-aware linear attention, "Rectifying Magnitude Neglect in Linear Attention"
// (Fan et al., ICCV 2025, arXiv 2507.00698), in the form of the released code
// (docs/attention.md). With phi = elu + 1 and s = Dh^-1/2 (or "scale"):
//
//   kbar = (1/N) sum_j phi(k_j),  KV = (s/N) sum_j phi(k_j) v_j^T,  vbar = (1/N) sum_j v_j
//   z_i  = s phi(q_i) . kbar
//   o_i  = (1 + 1/(z_i + eps)) phi(q_i)^T KV - z_i vbar
//
// Causal (softlab's extension; the paper is bidirectional): N -> n_i = i + 1 and every sum runs over j <= i.
//
// The chunked kernel of headwise_kernel.hpp computes, per row, the unscaled sums over the
// visible keys a_i = sum_j A_ij v_j (Dv), c_i = sum_j A_ij and Vs_i = sum_j v_j, with
// A_ij = phi(q_i).phi(k_j) (bidirectional: one state over all keys; causal: a masked tile
// inside each chunk plus the prefix state). This file supplies the per-row rule (RowRule with
// mala = true). With sn = s/n_i:
//
//   u_i = sn a_i,  z_i = sn c_i,  vbar = Vs_i / n_i
//   u_i / (z_i + eps) = a_i / den_i  with  den_i = c_i + eps n_i / s            (exact)
//   o_i = sn a_i + a_i / den_i - sn c_i Vs_i / n_i = (sn + 1/den_i) a_i - (sn c_i / n_i) Vs_i
//
// The ratio is formed as a normalised linear attention, a / den, as docs/attention.md's numerics note
// asks: when phi(q_i) is tiny, z_i and u_i are both O(|phi(q_i)|) and 1/z_i alone would blow
// up, while a_i / den_i stays a well-conditioned ratio. The rule runs in double: the two
// terms sn a_i and sn c_i Vs_i / n_i nearly cancel (precision note 4 of headwise_kernel.hpp).
//
// Backward, in these variables (docs/attention.md's du, dz, dKV, dkbar, dvbar, regrouped;
// algebraically the same), with g_i = dO_i:
//   da_i   = (sn + 1/den_i) g_i                                      ka_i = sn + 1/den_i
//   dc_i   = -(g_i . a_i) / den_i^2 - sn (g_i . Vs_i) / n_i          (den_i and z_i both move with c_i)
//   dVs_i  = -(sn c_i / n_i) g_i                                     kv_i = -sn c_i / n_i
// and the kernel turns (ka_i, dc_i, kv_i) into dq, dk, dv. Memory is linear in N: chunk tiles,
// the Dh x Dv state, and three doubles per row in backward; no N x N matrix.
#include <memory>

#include "attention/headwise_kernel.hpp"
#include "attention/reference_ops.hpp"
#include "softlab/attention.hpp"
#include "softlab/ops.hpp"

namespace softlab {

AttentionEntry mala_attention_entry() {
  AttentionEntry e;
  e.name = "mala";
  e.help = "magnitude-aware linear attention, (1 + 1/z) phi(q)^T KV - z vbar, z = s phi(q).kbar, phi = elu+1 "
           "(Fan et al. 2025)";
  e.caps = {.causal = true, .padding = true};
  e.schema = {
      {.name = "eps", .type = ParamType::Float, .default_value = 1e-6, .min = 0.0, .help = "added to z in 1/(z + eps)"},
      {.name = "causal", .type = ParamType::Bool, .default_value = false,
       .help = "query i sees keys 0..i only (prefix means with n_i = i + 1)"},
      {.name = "scale", .type = ParamType::Float, .default_value = nullptr, .min = 0.0, .min_exclusive = true,
       .help = "s in z = s phi(q).kbar and KV = (s/N) sum phi(k)v^T; null means Dh^-1/2", .nullable = true},
  };
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    detail::RowRule rule;
    rule.mala = true;
    rule.s = p["scale"].is_null() ? 0.0 : p["scale"].get<double>();  // 0: Dh^-1/2, resolved per call
    rule.eps = p["eps"].get<double>();
    return detail::chunked_attention("mala_attention", rule, p["causal"].get<bool>());
  };
  // The code form on the explicit matrix A_ij = phi(q_i).phi(k_j) M_ij (M the visibility):
  //   z_i = (s/n_i) Σ_j A_ij,  u_i = (s/n_i) (A V)_i,  vbar_i = (M V)_i / n_i,
  //   o_i = (1 + 1/(z_i + eps)) u_i - z_i vbar_i.
  e.reference = [](Attention&, const json& p, const AttentionContext&, const Tensor& q, const Tensor& k,
                   const Tensor& v) {
    const int64_t n = q.shape()[2];
    const bool causal = p["causal"].get<bool>();
    const Tensor mask = attention_ref::visibility(n, causal);
    const Tensor cnt = attention_ref::visible_counts(n, causal);                 // n_i, [N, 1]
    const Tensor sn = div(full({n, 1}, attention_ref::scale_of(p, q)), cnt);    // s / n_i
    const Tensor a = mul(matmul(attention_ref::elu_plus_one(q), attention_ref::elu_plus_one(k), false, true), mask);
    const Tensor z = mul(sum(a, -1, true), sn);
    const Tensor u = mul(matmul(a, v), sn);
    const Tensor vbar = div(attention_ref::left_matmul(mask, v), cnt);
    const Tensor w = add_scalar(div(ones({1}), add_scalar(z, p["eps"].get<float>())), 1.0f);
    return sub(mul(w, u), mul(z, vbar));
  };
  e.golden = {
      "mala_bidir_n13_d8",
      "mala_bidir_n7",
      "mala_causal_n7",
  };
  return e;
}

}  // namespace softlab
