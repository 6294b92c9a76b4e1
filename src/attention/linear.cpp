// linear: "Transformers are RNNs" (Katharopoulos et al. 2020, arXiv 2006.16236), with the
// feature map phi = elu + 1 and no 1/sqrt(Dh) scale (docs/attention.md):
//
//   bidirectional:  S = sum_j phi(k_j) v_j^T  (Dh x Dv),  z = sum_j phi(k_j)  (Dh)
//   causal:         S_i, z_i = the same sums over j <= i
//   o_i = phi(q_i)^T S / (phi(q_i) . z + eps)
//
// One fused op with a hand-written backward, the chunked kernel of headwise_kernel.hpp
// (bidirectional: the state summed over all keys chunk by chunk; causal: a masked C x C tile
// inside each chunk of C tokens plus the prefix state of the earlier chunks). The module
// supplies only its per-row rule, RowRule with mala = false:
//
//   o_i = a_i / (c_i + eps),  a_i = phi(q_i)^T S_i,  c_i = phi(q_i) . z_i
//
// and its backward scalars: da_i = g_i / den_i, dc_i = -(g_i . a_i) / den_i^2 (g_i = dO_i,
// den_i = c_i + eps), from which the kernel forms dq, dk, dv (headwise_kernel.hpp, the
// backward comment). The forward runs in double, the backward in float inside a chunk and
// double between chunks (the precision note in headwise_kernel.hpp); memory is linear in N: chunk tiles,
// the Dh x Dv state and three doubles per row in backward, never an N x N matrix.
#include <memory>

#include "attention/headwise_kernel.hpp"
#include "attention/reference_ops.hpp"
#include "softlab/attention.hpp"
#include "softlab/ops.hpp"

namespace softlab {

AttentionEntry linear_attention_entry() {
  AttentionEntry e;
  e.name = "linear";
  e.help = "linear attention, phi(q)^T sum phi(k)v^T / (phi(q).sum phi(k) + eps), phi = elu+1 "
           "(Katharopoulos et al. 2020)";
  e.caps = {.causal = true, .padding = true};
  e.schema = {
      {.name = "eps", .type = ParamType::Float, .default_value = 1e-6, .min = 0.0,
       .help = "added to the denominator phi(q).sum phi(k)"},
      {.name = "causal", .type = ParamType::Bool, .default_value = false, .help = "query i sees keys 0..i only"},
  };
  e.factory = [](const json& p, const AttentionContext&) -> std::unique_ptr<Attention> {
    detail::RowRule rule;
    rule.mala = false;
    rule.eps = p["eps"].get<double>();
    return detail::chunked_attention("linear_attention", rule, p["causal"].get<bool>());
  };
  // On the explicit matrix A_ij = phi(q_i).phi(k_j) M_ij (M the visibility), with phi as
  // docs/attention.md writes it (the kernel uses a cancellation-free branch form):
  // o_i = Σ_j A_ij v_j / (Σ_j A_ij + eps).
  e.reference = [](Attention&, const json& p, const AttentionContext&, const Tensor& q, const Tensor& k,
                   const Tensor& v) {
    const Tensor a = mul(matmul(attention_ref::elu_plus_one(q), attention_ref::elu_plus_one(k), false, true),
                         attention_ref::visibility(q.shape()[2], p["causal"].get<bool>()));
    return div(matmul(a, v), add_scalar(sum(a, -1, true), p["eps"].get<float>()));
  };
  e.golden = {
      "linear_bidir_n1",
      "linear_bidir_n7",
      "linear_causal_n7",
  };
  return e;
}

}  // namespace softlab
